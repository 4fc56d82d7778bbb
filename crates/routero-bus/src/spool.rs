//! The spool: an ordered, fsynced, bounded queue of audit events on local disk, between the
//! in-process bus and where the events go (the broker, or the audit writer of `routero up`).
//!
//! Events are lines of JSON in numbered segment files (`00000000000000000001.spool`, ...);
//! `delivered` holds the position up to which the broker acknowledged them. An append is on
//! disk (fsynced) before the bus forgets the events; a segment is deleted once every line in it
//! was acknowledged. After a crash, a torn last line is cut off (it was never acknowledged to
//! anyone) and delivery resumes from `delivered`, so at worst a few events are sent twice,
//! which the audit writer skips by event id.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors of the spool.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// The spool's bound is reached.
    #[error("audit spool full")]
    Full,
    /// Spool file I/O failed.
    #[error("audit spool: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A spool file does not have the expected shape.
    #[error("audit spool corrupt: {0}")]
    Corrupt(&'static str),
}

const SEGMENT_SUFFIX: &str = ".spool";
const DELIVERED_FILE: &str = "delivered";

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    segment: u64,
    offset: u64,
}

/// One spooled line and the position just after it.
#[derive(Debug)]
pub struct Spooled {
    /// The line, without its newline.
    pub line: Vec<u8>,
    /// Acknowledging this position acknowledges the line and everything before it.
    pub end: Position,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
}

/// The spool directory, opened.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    active: File,
    delivered: Position,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

fn io(context: &'static str) -> impl Fn(std::io::Error) -> SpoolError {
    move |source| SpoolError::Io { context, source }
}

/// Cuts a segment back to its last complete line; returns the new length.
fn cut_torn_tail(path: &Path) -> Result<u64, SpoolError> {
    let bytes = fs::read(path).map_err(io("read segment"))?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep != bytes.len() {
        tracing::warn!(path = %path.display(), cut = bytes.len() - keep, "spool: cutting a torn last line");
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("open segment"))?;
        file.set_len(keep as u64).map_err(io("truncate segment"))?;
        file.sync_all().map_err(io("sync segment"))?;
    }
    Ok(keep as u64)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes` of undelivered events.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        Self::open_with_segments(dir, max_bytes, (max_bytes / 16).clamp(64 * 1024, 64 << 20))
    }

    fn open_with_segments(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Self, SpoolError> {
        routero_files::private_dir(dir).map_err(io("create spool directory"))?;
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(io("list spool"))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut delivered = match fs::read_to_string(dir.join(DELIVERED_FILE)) {
            Ok(text) => parse_position(&text).ok_or(SpoolError::Corrupt("delivered"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position {
                segment: ids.first().copied().unwrap_or(1),
                offset: 0,
            },
            Err(e) => return Err(io("read delivered")(e)),
        };
        let mut segments = VecDeque::new();
        for id in ids {
            let path = segment_path(dir, id);
            if id < delivered.segment {
                fs::remove_file(&path).map_err(io("remove delivered segment"))?;
                continue;
            }
            let len = cut_torn_tail(&path)?;
            segments.push_back(Segment { id, len });
        }
        if segments.is_empty() {
            segments.push_back(Segment {
                id: delivered.segment,
                len: 0,
            });
        }
        if let Some(first) = segments.front() {
            if delivered.segment < first.id {
                // The mark's segment was deleted after the mark moved on: start at the next.
                delivered = Position {
                    segment: first.id,
                    offset: 0,
                };
            } else if delivered.offset > first.len {
                delivered.offset = first.len;
            }
        }
        let last = segments.back().map_or(delivered.segment, |s| s.id);
        let active = routero_files::append_private(&segment_path(dir, last))
            .map_err(io("open active segment"))?;
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            segments,
            active,
            delivered,
        })
    }

    /// Bytes written and not yet acknowledged.
    pub fn pending_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>() - self.delivered.offset
    }

    /// Whether `bytes` more fit under the bound (an empty spool takes any one batch).
    fn has_room(&self, bytes: u64) -> bool {
        let pending = self.pending_bytes();
        pending == 0 || pending + bytes <= self.max_bytes
    }

    /// Appends lines (no newlines inside) and fsyncs; `Err(SpoolFull)` leaves the spool as it was.
    pub fn append<L: AsRef<[u8]>>(&mut self, lines: &[L]) -> Result<(), SpoolError> {
        let bytes: u64 = lines.iter().map(|l| l.as_ref().len() as u64 + 1).sum();
        if !self.has_room(bytes) {
            return Err(SpoolError::Full);
        }
        self.write_lines(lines, bytes)
    }

    /// Appends past the bound: only for what a stopping process still holds, which would
    /// otherwise be lost (at most the bus's capacity).
    pub fn append_beyond_bound<L: AsRef<[u8]>>(&mut self, lines: &[L]) -> Result<(), SpoolError> {
        let bytes: u64 = lines.iter().map(|l| l.as_ref().len() as u64 + 1).sum();
        self.write_lines(lines, bytes)
    }

    fn write_lines<L: AsRef<[u8]>>(&mut self, lines: &[L], bytes: u64) -> Result<(), SpoolError> {
        if self
            .segments
            .back()
            .is_some_and(|s| s.len >= self.segment_bytes)
        {
            let id = self.segments.back().map_or(1, |s| s.id + 1);
            self.active = routero_files::append_private(&segment_path(&self.dir, id))
                .map_err(io("open new segment"))?;
            self.segments.push_back(Segment { id, len: 0 });
        }
        let mut buffer = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
        for line in lines {
            buffer.extend_from_slice(line.as_ref());
            buffer.push(b'\n');
        }
        self.active
            .write_all(&buffer)
            .map_err(io("append to spool"))?;
        self.active.sync_data().map_err(io("sync spool"))?;
        if let Some(segment) = self.segments.back_mut() {
            segment.len += bytes;
        }
        Ok(())
    }

    /// Up to `max` lines after the acknowledged position, in order.
    pub fn read_pending(&self, max: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::new();
        let mut at = self.delivered;
        let from = at.segment;
        for segment in self.segments.iter().filter(|s| s.id >= from) {
            if out.len() >= max {
                break;
            }
            if segment.id > at.segment {
                at = Position {
                    segment: segment.id,
                    offset: 0,
                };
            }
            if at.offset >= segment.len {
                continue;
            }
            let mut file =
                File::open(segment_path(&self.dir, segment.id)).map_err(io("open segment"))?;
            file.seek(SeekFrom::Start(at.offset))
                .map_err(io("seek segment"))?;
            let mut reader = BufReader::new(file.take(segment.len - at.offset));
            while out.len() < max {
                let mut line = Vec::new();
                let read = reader
                    .read_until(b'\n', &mut line)
                    .map_err(io("read segment"))?;
                if read == 0 {
                    break;
                }
                if line.pop() != Some(b'\n') {
                    return Err(SpoolError::Corrupt("line without newline"));
                }
                at.offset += read as u64;
                out.push(Spooled { line, end: at });
            }
        }
        Ok(out)
    }

    /// Records that everything up to `end` reached the broker; deletes finished segments.
    pub fn acknowledge(&mut self, end: Position) -> Result<(), SpoolError> {
        if end <= self.delivered {
            return Ok(());
        }
        let mut delivered = end;
        let mut finished = Vec::new();
        // Segments before the mark, and a finished one that is not being written, go.
        while let (Some(current), Some(next)) = (self.segments.front(), self.segments.get(1)) {
            if current.id == delivered.segment && delivered.offset >= current.len {
                delivered = Position {
                    segment: next.id,
                    offset: 0,
                };
            } else if current.id >= delivered.segment {
                break;
            }
            finished.push(current.id);
            self.segments.pop_front();
        }
        self.delivered = delivered;
        self.write_delivered(delivered)?;
        for id in finished {
            fs::remove_file(segment_path(&self.dir, id)).map_err(io("remove segment"))?;
        }
        Ok(())
    }

    /// The mark is written by rename: a crash leaves the old one or the new one (losing the
    /// new one re-sends events, which the writer skips).
    fn write_delivered(&self, at: Position) -> Result<(), SpoolError> {
        routero_files::write_private(
            &self.dir.join(DELIVERED_FILE),
            format!("{} {}\n", at.segment, at.offset).as_bytes(),
        )
        .map_err(io("write delivered"))
    }
}

fn parse_position(text: &str) -> Option<Position> {
    let (segment, offset) = text.trim().split_once(' ')?;
    Some(Position {
        segment: segment.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(spool: &Spool) -> Vec<String> {
        spool
            .read_pending(usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .map(|s| String::from_utf8_lossy(&s.line).into_owned())
            .collect()
    }

    #[test]
    fn lines_come_back_in_order_across_segments_and_reopening() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir().map_err(io("tempdir"))?;
        let mut spool = Spool::open_with_segments(dir.path(), 1 << 20, 20)?;
        for i in 0..10 {
            spool.append(&[format!("event-{i}")])?;
        }
        assert!(spool.segments.len() > 1, "small segments roll over");
        let first_four = spool.read_pending(4)?;
        assert_eq!(first_four.len(), 4);
        if let Some(last) = first_four.last() {
            spool.acknowledge(last.end)?;
        }
        drop(spool);

        let mut spool = Spool::open_with_segments(dir.path(), 1 << 20, 20)?;
        let expected: Vec<String> = (4..10).map(|i| format!("event-{i}")).collect();
        assert_eq!(lines(&spool), expected);
        let all = spool.read_pending(usize::MAX)?;
        if let Some(last) = all.last() {
            spool.acknowledge(last.end)?;
        }
        assert_eq!(spool.pending_bytes(), 0);
        assert!(lines(&spool).is_empty());
        let segment_files = fs::read_dir(dir.path())
            .map_err(io("list"))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX))
            })
            .count();
        assert_eq!(segment_files, 1, "acknowledged segments are deleted");
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_rest_survives() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir().map_err(io("tempdir"))?;
        let mut spool = Spool::open(dir.path(), 1 << 20)?;
        spool.append(&["one", "two"])?;
        drop(spool);
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io("open"))?;
        file.write_all(b"{\"half").map_err(io("write"))?;
        drop(file);

        let mut spool = Spool::open(dir.path(), 1 << 20)?;
        assert_eq!(lines(&spool), ["one", "two"]);
        spool.append(&["three"])?;
        assert_eq!(lines(&spool), ["one", "two", "three"]);
        Ok(())
    }

    #[test]
    fn the_bound_refuses_without_writing() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir().map_err(io("tempdir"))?;
        let mut spool = Spool::open(dir.path(), 16)?;
        spool.append(&["0123456789"])?;
        assert!(matches!(
            spool.append(&["0123456789"]),
            Err(SpoolError::Full)
        ));
        assert_eq!(lines(&spool), ["0123456789"]);
        let pending = spool.read_pending(1)?;
        if let Some(last) = pending.last() {
            spool.acknowledge(last.end)?;
        }
        spool.append(&["abcdefghij"])?;
        assert_eq!(lines(&spool), ["abcdefghij"]);
        Ok(())
    }
}
