//! A file's bytes through one reader that inflates gzip, with the reservation
//! rule that keeps a header's claimed size from becoming an allocation.

use crate::error::{Error, Result};
use crate::npz::PLAUSIBLE_DEFLATE_RATIO;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A file's bytes, inflated when they start with the gzip magic (whatever the name).
pub(super) struct Content<'p> {
    path: &'p Path,
    reader: Box<dyn BufRead>,
    pub(super) gzip: bool,
    /// Size on disk: bounds how much a header can honestly claim.
    file_len: u64,
}

impl<'p> Content<'p> {
    pub(super) fn open(path: &'p Path) -> Result<Content<'p>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut raw = BufReader::new(file);
        let gzip = raw
            .fill_buf()
            .map_err(|e| Error::io(path, e))?
            .starts_with(&GZIP_MAGIC);
        let reader: Box<dyn BufRead> = if gzip {
            // Multi-member, as `gzip` itself reads concatenated members.
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(Content {
            path,
            reader,
            gzip,
            file_len,
        })
    }

    /// Up to `n` leading bytes of the content, without consuming them.
    pub(super) fn peek(&mut self, n: usize) -> Result<Vec<u8>> {
        let (path, gzip) = (self.path, self.gzip);
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| read_error(path, gzip, e))?;
        Ok(buf[..buf.len().min(n)].to_vec())
    }

    /// How much to reserve up front for content a header says is `claimed` bytes
    /// long: never more than the file could plausibly inflate to at an ordinary
    /// ratio (the buffer grows past it if the data really is longer), so a lying
    /// header cannot make the reader reserve memory the bytes do not back.
    fn reservation(&self, claimed: u64) -> usize {
        let plausible = if self.gzip {
            self.file_len.saturating_mul(PLAUSIBLE_DEFLATE_RATIO)
        } else {
            self.file_len
        };
        usize::try_from(claimed.min(plausible)).unwrap_or(0)
    }

    pub(super) fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt(&format!("truncated: ends inside the {what}"))
            } else {
                self.read_error(e)
            }
        })
    }

    /// Reads at most `limit` bytes, then reports whether more followed.
    pub(super) fn read_up_to(&mut self, limit: u64) -> Result<(Vec<u8>, bool)> {
        let mut out = Vec::with_capacity(self.reservation(limit));
        (&mut self.reader)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(e))?;
        let (path, gzip) = (self.path, self.gzip);
        let more = !self
            .reader
            .fill_buf()
            .map_err(|e| read_error(path, gzip, e))?
            .is_empty();
        Ok((out, more))
    }

    pub(super) fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(if self.gzip { 0 } else { self.file_len as usize });
        self.reader
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(e))?;
        Ok(out)
    }

    fn read_error(&self, e: std::io::Error) -> Error {
        read_error(self.path, self.gzip, e)
    }

    pub(super) fn corrupt(&self, what: &str) -> Error {
        Error::config(format!("{}: {what}", self.path.display()))
    }
}

fn read_error(path: &Path, gzip: bool, e: std::io::Error) -> Error {
    if gzip {
        // flate2 reports bad or truncated gzip data as I/O errors.
        Error::config(format!(
            "{}: corrupt or truncated gzip data ({e})",
            path.display()
        ))
    } else {
        Error::io(path, e)
    }
}
