//! A durable, append-only log of records: the storage under the label store and the record of
//! scored flows.
//!
//! One record per line: the CRC-32 of the JSON text in hex, a space, the JSON, a newline.
//! `append` returns only after the line is written and `fsync`ed (`sync_data`), so an
//! acknowledged record survives a crash. A crash mid-write leaves at most one torn last line
//! (no newline, or a checksum that does not match); `open` cuts it off, counts it, and the
//! log opens. A bad line anywhere else is corruption, reported with the file and line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {problem}")]
    Corrupt { path: PathBuf, line: usize, problem: String },
    #[error("{path}: cannot encode a record: {source}")]
    Encode { path: PathBuf, source: serde_json::Error },
}

/// An append-only log of `T`s.
pub struct RecordLog<T> {
    path: PathBuf,
    file: File,
    /// A torn last line that `open` cut off (bytes), 0 if none.
    pub recovered_bytes: u64,
    _t: PhantomData<T>,
}

fn encode_line(json: &str) -> String {
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
}

/// Parses one line (without its newline); `Err` says why it is not a valid record line.
fn decode_line<T: DeserializeOwned>(line: &str) -> Result<T, String> {
    let (crc, json) = line.split_once(' ').ok_or("no checksum field")?;
    let want = u32::from_str_radix(crc, 16).map_err(|_| format!("bad checksum field {crc:?}"))?;
    if crc.len() != 8 || crc32fast::hash(json.as_bytes()) != want {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("bad record: {e}"))
}

impl<T: Serialize + DeserializeOwned> RecordLog<T> {
    /// Opens (creating if needed) the log at `path` and reads every record.
    pub fn open(path: &Path) -> Result<(RecordLog<T>, Vec<T>), LogError> {
        let io_err = |source| LogError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let mut records = Vec::new();
        let mut good_end = 0u64;
        let mut torn: Option<(usize, String)> = None;
        {
            let mut reader = BufReader::new(&mut file);
            let mut line = String::new();
            let mut n = 0;
            loop {
                line.clear();
                let read = reader.read_line(&mut line).map_err(io_err)?;
                if read == 0 {
                    break;
                }
                n += 1;
                if let Some((at, problem)) = torn.take() {
                    // A bad line followed by more lines is not a torn tail.
                    return Err(LogError::Corrupt { path: path.to_owned(), line: at, problem });
                }
                let complete = line.ends_with('\n');
                match decode_line::<T>(line.trim_end_matches('\n')) {
                    Ok(r) if complete => {
                        records.push(r);
                        good_end += read as u64;
                    }
                    Ok(_) => torn = Some((n, "last line has no newline".into())),
                    Err(problem) => torn = Some((n, problem)),
                }
            }
        }
        let len = file.metadata().map_err(io_err)?.len();
        let recovered_bytes = len - good_end;
        if recovered_bytes > 0 {
            // Only the last line can be torn by a crash: cut it off.
            file.set_len(good_end).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        Ok((RecordLog { path: path.to_owned(), file, recovered_bytes, _t: PhantomData }, records))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; returns once it is on stable storage.
    pub fn append(&mut self, record: &T) -> Result<(), LogError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends records with one `fsync`.
    pub fn append_all(&mut self, records: &[T]) -> Result<(), LogError> {
        let mut buf = String::new();
        for r in records {
            let json = serde_json::to_string(r).map_err(|source| LogError::Encode { path: self.path.clone(), source })?;
            buf.push_str(&encode_line(&json));
        }
        let io_err = |source| LogError::Io { path: self.path.clone(), source };
        self.file.write_all(buf.as_bytes()).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/log");
        let (mut log, old) = RecordLog::<Vec<u32>>::open(&p).unwrap();
        assert!(old.is_empty());
        log.append(&vec![1, 2]).unwrap();
        log.append_all(&[vec![3], vec![4]]).unwrap();
        drop(log);
        // A crash mid-write: half a line at the end.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"0000abcd [5,").unwrap();
        drop(f);
        let (mut log, recs) = RecordLog::<Vec<u32>>::open(&p).unwrap();
        assert_eq!(recs, vec![vec![1, 2], vec![3], vec![4]]);
        assert_eq!(log.recovered_bytes, 12);
        log.append(&vec![6]).unwrap();
        let (_, recs) = RecordLog::<Vec<u32>>::open(&p).unwrap();
        assert_eq!(recs.last().unwrap(), &vec![6]);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let (mut log, _) = RecordLog::<u32>::open(&p).unwrap();
        for i in 0..3 {
            log.append(&i).unwrap();
        }
        drop(log);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text = text.replacen(" 1\n", " 7\n", 1);
        std::fs::write(&p, text).unwrap();
        let e = RecordLog::<u32>::open(&p).err().unwrap().to_string();
        assert!(e.contains("log:2: checksum mismatch"), "{e}");
    }
}
