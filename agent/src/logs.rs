//! Reading a container's output: `ctr.log` and its rotated parts `ctr.log.1` (newest) ..
//! `ctr.log.N` (oldest), as `berth-shim` writes them.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

use crate::layout::ContainerPaths;

/// How often [`follow`] looks for new output.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// The most [`follow`] yields in one item.
const CHUNK: u64 = 1 << 20;

/// The rotated parts that exist, oldest first (ctr.log.N .. ctr.log.1).
fn old_parts(paths: &ContainerPaths) -> Vec<u32> {
    let mut n = 1;
    while paths.old_log(n).exists() {
        n += 1;
    }
    (1..n).rev().collect()
}

/// A file's whole content; a missing file (rotated away meanwhile) is empty.
fn read_all(path: &std::path::Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

/// The start of the last `lines` lines of `data` (a final line without a newline counts).
fn tail_start(data: &[u8], lines: usize) -> Option<usize> {
    if lines == 0 {
        return Some(0);
    }
    let end = match data.last() {
        Some(b'\n') => data.len() - 1,
        _ => data.len(),
    };
    let mut seen = 0;
    for (i, &b) in data[..end].iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == lines {
                return Some(i + 1);
            }
        }
    }
    None
}

/// The last lines across the parts, the newest part (`current`, ctr.log's content) given.
fn tail_with(paths: &ContainerPaths, lines: usize, current: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut data = current;
    // Older parts are prepended, newest first, until enough lines are in.
    for n in old_parts(paths).into_iter().rev() {
        if tail_start(&data, lines).is_some() && lines != 0 {
            break;
        }
        let mut older = read_all(&paths.old_log(n))?;
        older.extend_from_slice(&data);
        data = older;
    }
    let start = tail_start(&data, lines).unwrap_or(0);
    data.drain(..start);
    Ok(data)
}

/// Last `lines` lines (0 = all) across the rotated parts, oldest first.
pub fn tail(paths: &ContainerPaths, lines: usize) -> io::Result<Vec<u8>> {
    let current = read_all(&paths.log())?;
    tail_with(paths, lines, current)
}

/// What [`follow`] keeps between items.
struct Follower {
    paths: ContainerPaths,
    lines: usize,
    /// ctr.log as opened, read up to where output has been yielded.
    file: Option<File>,
    started: bool,
    until: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// `until` has resolved: one more pass reads what is left, then the stream ends.
    ending: bool,
    done: bool,
}

impl Follower {
    fn open_current(&self) -> io::Result<Option<File>> {
        match File::open(self.paths.log()) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Everything new since the last call: the rest of the file being followed, and when it
    /// was rotated, the parts written after it and the new ctr.log.
    fn poll_new(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.file = self.open_current()?;
            let mut current = Vec::new();
            if let Some(f) = self.file.as_mut() {
                f.read_to_end(&mut current)?;
            }
            return tail_with(&self.paths, self.lines, current);
        }
        loop {
            let Some(f) = self.file.as_mut() else {
                self.file = self.open_current()?;
                if self.file.is_none() {
                    return Ok(out);
                }
                continue;
            };
            f.take(CHUNK.saturating_sub(out.len() as u64))
                .read_to_end(&mut out)?;
            if out.len() as u64 >= CHUNK {
                return Ok(out);
            }
            let ours = f.metadata()?;
            let now = match std::fs::metadata(self.paths.log()) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if now
                .as_ref()
                .is_some_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev())
            {
                return Ok(out);
            }
            // Rotated: our file is now ctr.log.K (or deleted, if rotated past the last part).
            // Read the rest of it (done above), then ctr.log.(K-1) .. ctr.log.1, then the
            // new ctr.log.
            let parts = old_parts(&self.paths);
            let newer: Vec<u32> = match parts.iter().position(|&n| {
                std::fs::metadata(self.paths.old_log(n))
                    .is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev())
            }) {
                Some(i) => parts[i + 1..].to_vec(),
                // Gone: some output was rotated away unread; what is left follows.
                None => parts,
            };
            for n in newer {
                out.extend(read_all(&self.paths.old_log(n))?);
            }
            self.file = self.open_current()?;
            if self.file.is_none() {
                return Ok(out);
            }
        }
    }

    async fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        if self.done {
            return None;
        }
        loop {
            match self.poll_new() {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(data) if !data.is_empty() => return Some(Ok(data)),
                Ok(_) if self.ending => {
                    self.done = true;
                    return None;
                }
                Ok(_) => {}
            }
            tokio::select! {
                () = &mut self.until => self.ending = true,
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
        }
    }
}

/// The log from the tail onwards, then what is appended, across rotations (ctr.log renamed
/// -> reopen), until `until` resolves and the file is drained. Looks for new output every
/// [`FOLLOW_INTERVAL`].
pub fn follow(
    paths: ContainerPaths,
    lines: usize,
    until: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = io::Result<Vec<u8>>> + Send {
    let follower = Follower {
        paths,
        lines,
        file: None,
        started: false,
        until: Box::pin(until),
        ending: false,
        done: false,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let item = f.next().await?;
        Some((item, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn paths(dir: &std::path::Path) -> ContainerPaths {
        crate::layout::Layout::new(dir).container("c")
    }

    #[test]
    fn tail_start_counts_lines() {
        assert_eq!(tail_start(b"a\nb\nc\n", 2), Some(2));
        assert_eq!(tail_start(b"a\nb\nc", 2), Some(2));
        assert_eq!(tail_start(b"a\nb\n", 2), None);
        assert_eq!(tail_start(b"", 1), None);
    }

    #[test]
    fn tail_across_parts() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        std::fs::create_dir_all(&p.dir).unwrap();
        std::fs::write(p.old_log(2), "1\n2\n").unwrap();
        std::fs::write(p.old_log(1), "3\n4\n").unwrap();
        std::fs::write(p.log(), "5\n").unwrap();
        assert_eq!(tail(&p, 0).unwrap(), b"1\n2\n3\n4\n5\n");
        assert_eq!(tail(&p, 2).unwrap(), b"4\n5\n");
        assert_eq!(tail(&p, 4).unwrap(), b"2\n3\n4\n5\n");
        assert_eq!(tail(&p, 9).unwrap(), b"1\n2\n3\n4\n5\n");
    }

    #[tokio::test]
    async fn follow_sees_rotations() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        std::fs::create_dir_all(&p.dir).unwrap();
        std::fs::write(p.log(), "a\nb\n").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut stream = Box::pin(follow(p.clone(), 1, async {
            let _ = rx.await;
        }));
        assert_eq!(stream.next().await.unwrap().unwrap(), b"b\n");
        // Two rotations between looks: ctr.log -> .1 -> .2.
        std::fs::OpenOptions::new()
            .append(true)
            .open(p.log())
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"c\n"))
            .unwrap();
        std::fs::rename(p.log(), p.old_log(1)).unwrap();
        std::fs::write(p.log(), "d\n").unwrap();
        std::fs::rename(p.old_log(1), p.old_log(2)).unwrap();
        std::fs::rename(p.log(), p.old_log(1)).unwrap();
        std::fs::write(p.log(), "e\n").unwrap();
        tx.send(()).unwrap();
        let mut rest = Vec::new();
        while let Some(item) = stream.next().await {
            rest.extend(item.unwrap());
        }
        assert_eq!(rest, b"c\nd\ne\n");
    }
}
