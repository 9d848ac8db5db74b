//! `ldam-onnx serve-web DIR`: a small static file server for the browser
//! trainer (`web/`), on 127.0.0.1 only. It answers GET and HEAD with the file's
//! bytes and its MIME type (`application/wasm` and `.mjs` modules included, which
//! browsers insist on), serves `index.html` for a folder, and refuses any path
//! that leaves DIR (`..`, symbolic links pointing out). It sends the
//! cross-origin isolation headers, so onnxruntime-web may use threads.

use anyhow::{Context, Result};
use clap::Args;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Example: ldam-onnx serve-web web --port 8000, then open the printed URL.")]
pub struct ServeWebArgs {
    /// The folder to serve
    dir: PathBuf,
    /// Port on 127.0.0.1 (0: any free port; the URL printed says which)
    #[arg(long, default_value_t = 8000)]
    port: u16,
}

pub fn run_serve_web(args: ServeWebArgs) -> Result<()> {
    let root = args
        .dir
        .canonicalize()
        .with_context(|| format!("{}: cannot serve it", args.dir.display()))?;
    if !root.is_dir() {
        anyhow::bail!("{}: not a folder", args.dir.display());
    }
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    println!("serving {} at http://127.0.0.1:{port}/", root.display());
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            // A client that goes away mid-answer is not the server's problem.
            let _ = answer(stream, &root);
        });
    }
    Ok(())
}

/// The MIME type of a file, from its extension.
fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `%XX` escapes decoded; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file a request target names under `root`, or `None` when it would leave
/// `root` or names nothing there.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let relative = Path::new(decoded.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let mut full = root.join(relative).canonicalize().ok()?;
    if !full.starts_with(root) {
        return None;
    }
    if full.is_dir() {
        full = full.join("index.html");
    }
    full.is_file().then_some(full)
}

fn answer(mut stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let respond = |stream: &mut TcpStream, status: &str, kind: &str, body: &[u8], head: bool| {
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nCross-Origin-Opener-Policy: same-origin\r\n\
             Cross-Origin-Embedder-Policy: require-corp\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        if !head {
            stream.write_all(body)?;
        }
        stream.flush()
    };
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD\n",
            false,
        );
    }
    match resolve(root, target).map(|p| std::fs::read(&p).map(|b| (p, b))) {
        Some(Ok((path, body))) => respond(
            &mut stream,
            "200 OK",
            mime_type(&path),
            &body,
            method == "HEAD",
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found\n",
            method == "HEAD",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_cover_modules_and_wasm() {
        assert_eq!(mime_type(Path::new("a/ort.wasm")), "application/wasm");
        assert!(mime_type(Path::new("step.mjs")).starts_with("text/javascript"));
        assert!(mime_type(Path::new("index.HTML")).starts_with("text/html"));
        assert_eq!(mime_type(Path::new("d.bin")), "application/octet-stream");
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "i").unwrap();
        std::fs::write(root.join("sub/a b.js"), "a").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(resolve(&root, "/"), Some(root.join("index.html")));
        assert_eq!(
            resolve(&root, "/sub/a%20b.js?x=1"),
            Some(root.join("sub/a b.js"))
        );
        for bad in [
            "/../secret",
            "/sub/../../secret",
            "/%2e%2e/secret",
            "//etc/passwd",
            "/nope",
        ] {
            assert_eq!(resolve(&root, bad), None, "{bad}");
        }
    }
}
