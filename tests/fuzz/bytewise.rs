//! Plain byte mutations of a serialized file: bit flips, truncation, insertion,
//! overwrites and duplicated runs.

use super::rng::Rng;

/// Where mutations land. A serialized model keeps its nodes and header in the
/// first few kilobytes and its inputs, outputs and opsets in the last ones, with
/// megabytes of weights between; `hot` names those ends so that most mutations
/// hit structure rather than float payloads.
#[derive(Debug, Clone, Copy)]
pub struct Hot {
    pub head: usize,
    pub tail: usize,
}

impl Hot {
    pub const ANYWHERE: Hot = Hot { head: 0, tail: 0 };
}

fn position(rng: &mut Rng, len: usize, hot: Hot) -> usize {
    if len == 0 {
        return 0;
    }
    let r = rng.below(10);
    if r < 5 && hot.head > 0 {
        rng.below(hot.head.min(len))
    } else if r < 7 && hot.tail > 0 {
        len - 1 - rng.below(hot.tail.min(len))
    } else {
        rng.below(len)
    }
}

/// Applies 1 to 4 byte-level mutations; returns what was done.
pub fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng, hot: Hot) -> Vec<String> {
    let mut log = Vec::new();
    for _ in 0..rng.range(1, 4) {
        let len = bytes.len();
        let at = position(rng, len, hot);
        match rng.weighted(&[30, 10, 12, 12, 10, 8, 8]) {
            0 if len > 0 => {
                let bit = rng.below(8);
                bytes[at] ^= 1 << bit;
                log.push(format!("flip bit {bit} of byte {at}"));
            }
            1 if len > 0 => {
                let value = *rng.pick(&[0x00, 0xff, 0x7f, 0x80, 0x01]);
                bytes[at] = value;
                log.push(format!("byte {at} = 0x{value:02x}"));
            }
            2 => {
                let keep = if rng.chance(0.3) {
                    rng.below(len.min(64) + 1)
                } else {
                    at
                };
                bytes.truncate(keep);
                log.push(format!("truncate to {keep} bytes"));
            }
            3 => {
                let n = rng.range(1, 16);
                let insert = if rng.chance(0.5) {
                    rng.bytes(n)
                } else {
                    // A varint that claims a huge length, a common decoder trap.
                    vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..n.min(10)]
                        .to_vec()
                };
                let k = insert.len();
                bytes.splice(at..at, insert);
                log.push(format!("insert {k} bytes at {at}"));
            }
            4 if len > 0 => {
                let n = rng.range(1, 32).min(len - at);
                bytes.drain(at..at + n);
                log.push(format!("delete {n} bytes at {at}"));
            }
            5 if len > 0 => {
                let n = rng.range(1, 64).min(len - at);
                let run = bytes[at..at + n].to_vec();
                let to = position(rng, len, hot);
                bytes.splice(to..to, run);
                log.push(format!("copy {n} bytes from {at} to {to}"));
            }
            6 if len > 0 => {
                let n = rng.range(1, 8).min(len - at);
                let fill = rng.next_u64() as u8;
                bytes[at..at + n].fill(fill);
                log.push(format!("fill {n} bytes at {at} with 0x{fill:02x}"));
            }
            _ => {
                bytes.push(rng.next_u64() as u8);
                log.push("append 1 byte".to_string());
            }
        }
    }
    log
}
