//! The file format: one self-delimiting record per message.
//!
//! # Under stress
//!
//! - **A truncated or corrupt file** (a process killed mid-write, a bad
//!   copy): [`Reader`] yields every valid record before the damage, then one
//!   [`ReadError`] saying at which byte and which record it stopped, then
//!   nothing more.

use std::io::{BufRead, Write};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One recorded message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<M> {
    /// When it was recorded, microseconds since the Unix epoch.
    #[serde(rename = "at")]
    pub at_micros: u64,
    /// The topic it was published on.
    pub topic: String,
    /// The message.
    pub payload: M,
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One JSON object per line (`{"at":…,"topic":…,"payload":…}`).
    #[default]
    JsonLines,
    /// A CBOR sequence: one CBOR map per record, back to back.
    Cbor,
}

/// Why reading stopped before the end of the file.
#[derive(Debug, thiserror::Error)]
#[error("recording damaged at byte {offset} (record {record}): {reason}")]
#[non_exhaustive]
pub struct ReadError {
    /// Where the damaged record starts.
    pub offset: u64,
    /// Its number, counting from 1.
    pub record: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Writes records to `W` in one format.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    format: Format,
}

impl<W: Write> Writer<W> {
    /// A writer of `format` records to `out`.
    pub fn new(out: W, format: Format) -> Self {
        Writer { out, format }
    }

    /// Appends one record. It is encoded whole before anything is written,
    /// so a payload that cannot be encoded (`ErrorKind::InvalidData`) leaves
    /// the file as it was.
    pub fn write<M: Serialize>(&mut self, entry: &Entry<M>) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        match self.format {
            Format::JsonLines => {
                serde_json::to_writer(&mut bytes, entry)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                bytes.push(b'\n');
            }
            Format::Cbor => ciborium::into_writer(entry, &mut bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
        }
        self.out.write_all(&bytes)
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.read += n as u64;
        self.inner.consume(n);
    }
}

/// Reads records back; an iterator of `Result<Entry<M>, ReadError>` that
/// ends after the first error.
pub struct Reader<R, M> {
    input: Counting<R>,
    format: Format,
    record: u64,
    done: bool,
    line: Vec<u8>,
    _message: PhantomData<fn() -> M>,
}

impl<R, M> std::fmt::Debug for Reader<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("format", &self.format)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead, M: DeserializeOwned> Reader<R, M> {
    /// A reader of `format` records from `input`.
    pub fn new(input: R, format: Format) -> Self {
        Reader {
            input: Counting {
                inner: input,
                read: 0,
            },
            format,
            record: 0,
            done: false,
            line: Vec::new(),
            _message: PhantomData,
        }
    }

    fn fail(&mut self, offset: u64, reason: String) -> Option<Result<Entry<M>, ReadError>> {
        self.done = true;
        Some(Err(ReadError {
            offset,
            record: self.record,
            reason,
        }))
    }

    /// The next JSON line, or the error that ends the file.
    fn next_line(&mut self, offset: u64) -> Option<Result<Entry<M>, ReadError>> {
        self.line.clear();
        match self.input.read_until(b'\n', &mut self.line) {
            Ok(0) => None,
            Ok(_) => {
                self.record += 1;
                if self.line.last() != Some(&b'\n') {
                    return self.fail(
                        offset,
                        "the last record is cut short (no end of line)".into(),
                    );
                }
                match serde_json::from_slice(&self.line) {
                    Ok(entry) => Some(Ok(entry)),
                    Err(e) => self.fail(offset, e.to_string()),
                }
            }
            Err(e) => {
                self.record += 1;
                self.fail(offset, e.to_string())
            }
        }
    }

    /// The next CBOR item, or the error that ends the file.
    fn next_item(&mut self, offset: u64) -> Option<Result<Entry<M>, ReadError>> {
        match self.input.fill_buf() {
            Ok([]) => return None,
            Ok(_) => {}
            Err(e) => {
                self.record += 1;
                return self.fail(offset, e.to_string());
            }
        }
        self.record += 1;
        match ciborium::from_reader::<Entry<M>, _>(&mut self.input) {
            Ok(entry) => Some(Ok(entry)),
            Err(ciborium::de::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.fail(offset, "the last record is cut short".into())
            }
            Err(e) => self.fail(offset, e.to_string()),
        }
    }
}

/// Cuts `file` back to the end of its last whole record, so records appended
/// after a crash are not glued onto a damaged one. Returns the bytes cut
/// (0 when the file was whole). JSON lines: only the tail after the last line
/// end is read. CBOR has no marker to find from the end: the file is read
/// once, and cut at the first damaged record.
pub(crate) fn repair(file: &std::fs::File, format: Format) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let keep = match format {
        Format::JsonLines => after_last_line_end(file, len)?,
        Format::Cbor => {
            let reader = std::io::BufReader::new(file);
            let mut records = Reader::<_, serde::de::IgnoredAny>::new(reader, format);
            records.find_map(Result::err).map_or(len, |e| e.offset)
        }
    };
    if keep < len {
        file.set_len(keep)?;
    }
    Ok(len - keep)
}

/// The length of `file` up to and including its last `\n` (0 if it has none).
fn after_last_line_end(mut file: &std::fs::File, len: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut end = len;
    let mut chunk = [0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl<R: BufRead, M: DeserializeOwned> Iterator for Reader<R, M> {
    type Item = Result<Entry<M>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let offset = self.input.read;
        match self.format {
            Format::JsonLines => self.next_line(offset),
            Format::Cbor => self.next_item(offset),
        }
    }
}
