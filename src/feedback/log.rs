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

/// Appends one record line: its JSON's CRC-32, a space, the JSON, a newline.
fn push_line(buf: &mut String, json: &str) {
    use std::fmt::Write as _;
    let _ = write!(buf, "{:08x} ", crc32fast::hash(json.as_bytes()));
    buf.push_str(json);
    buf.push('\n');
}

/// Bytes a record of `json` takes in the log (checksum, space, newline).
pub fn line_len(json: &str) -> u64 {
    json.len() as u64 + 10
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
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let (records, good_end) = scan(path, &mut file)?;
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

    /// Opens the log to append without reading it: for a writer that never reads back (the
    /// sensor's record of scored flows), so start-up does not grow with the file. Only a torn
    /// last line is looked for (bytes after the last newline: a crash mid-write) and cut off.
    pub fn open_for_append(path: &Path) -> Result<RecordLog<T>, LogError> {
        let io_err = |source| LogError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut good_end = len;
        let mut pos = len;
        let mut buf = vec![0u8; 64 * 1024];
        // Walk back to the last newline (a record line is far shorter than this walk's limit).
        while pos > 0 {
            let n = buf.len().min(pos as usize);
            pos -= n as u64;
            file.seek(SeekFrom::Start(pos)).map_err(io_err)?;
            io::Read::read_exact(&mut file, &mut buf[..n]).map_err(io_err)?;
            if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
                good_end = pos + i as u64 + 1;
                break;
            }
            good_end = pos;
        }
        let recovered_bytes = len - good_end;
        if recovered_bytes > 0 {
            file.set_len(good_end).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        Ok(RecordLog { path: path.to_owned(), file, recovered_bytes, _t: PhantomData })
    }

    /// Reads every record without opening for writing and without repairing anything: for a
    /// reader beside a running writer (whose last line may be in flight, and is skipped).
    pub fn read(path: &Path) -> Result<Vec<T>, LogError> {
        match File::open(path) {
            Ok(mut f) => Ok(scan(path, &mut f)?.0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(LogError::Io { path: path.to_owned(), source }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the log now.
    pub fn len_bytes(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// Starts a fresh log: the current file becomes `<name>.1` (replacing an older one), so
    /// the record keeps between one and two logs' worth of the newest records.
    pub fn rotate(&mut self) -> Result<(), LogError> {
        let io_err = |source| LogError::Io { path: self.path.clone(), source };
        self.file.sync_all().map_err(io_err)?;
        std::fs::rename(&self.path, rotated(&self.path)).map_err(io_err)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(io_err)?;
        Ok(())
    }

    /// Appends a record; returns once it is on stable storage.
    pub fn append(&mut self, record: &T) -> Result<(), LogError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends records with one `fsync`.
    pub fn append_all(&mut self, records: &[T]) -> Result<(), LogError> {
        let mut buf = String::new();
        for r in records {
            let json = serde_json::to_string(r)
                .map_err(|source| LogError::Encode { path: self.path.clone(), source })?;
            push_line(&mut buf, &json);
        }
        self.write_synced(&buf)
    }

    /// Appends records already serialized (each a record of `T` as `serde_json` writes it),
    /// with one `fsync`: for a caller that needed the JSON anyway (the Kafka spool sizes each
    /// event by it), so that nothing is serialized twice.
    pub fn append_json<'a>(
        &mut self,
        jsons: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), LogError> {
        let mut buf = String::new();
        for json in jsons {
            push_line(&mut buf, json);
        }
        self.write_synced(&buf)
    }

    fn write_synced(&mut self, buf: &str) -> Result<(), LogError> {
        let io_err = |source| LogError::Io { path: self.path.clone(), source };
        self.file.write_all(buf.as_bytes()).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)
    }
}

/// Reads the records of `file`; returns them and the byte offset where the good lines end
/// (a bad or unterminated last line is a torn tail, left out; a bad line before others is
/// corruption).
fn scan<T: DeserializeOwned>(path: &Path, file: &mut File) -> Result<(Vec<T>, u64), LogError> {
    let io_err = |source| LogError::Io { path: path.to_owned(), source };
    let mut records = Vec::new();
    let mut good_end = 0u64;
    let mut torn: Option<(usize, String)> = None;
    let mut reader = BufReader::new(file);
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
    Ok((records, good_end))
}

/// Where [`RecordLog::rotate`] moves the previous log.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".1");
    path.with_file_name(name)
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
    fn append_only_open_cuts_a_torn_tail_and_rotation_keeps_the_previous_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flows.log");
        let mut log = RecordLog::<u32>::open_for_append(&p).unwrap();
        log.append_all(&[1, 2]).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"0000abcd 3").unwrap();
        drop(f);
        let mut log = RecordLog::<u32>::open_for_append(&p).unwrap();
        assert_eq!(log.recovered_bytes, 10);
        log.append(&3).unwrap();
        assert_eq!(RecordLog::<u32>::open(&p).unwrap().1, vec![1, 2, 3]);
        log.rotate().unwrap();
        log.append(&4).unwrap();
        assert_eq!(RecordLog::<u32>::open(&rotated(&p)).unwrap().1, vec![1, 2, 3]);
        assert_eq!(RecordLog::<u32>::open(&p).unwrap().1, vec![4]);
        // A file with no newline at all is one torn line.
        std::fs::write(&p, b"0000abcd 9").unwrap();
        assert_eq!(RecordLog::<u32>::open_for_append(&p).unwrap().recovered_bytes, 10);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
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
