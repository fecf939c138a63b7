//! Output of a session waiting to be sent to a client: bounded, in order, with
//! stdout and stderr interleaved as the process produced them.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

pub(crate) struct OutBuf {
    chunks: VecDeque<(Stream, Bytes)>,
    len: usize,
    cap: usize,
}

impl OutBuf {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            len: 0,
            cap,
        }
    }

    /// Holding `cap` bytes or more: an attached reader should stop reading.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.cap
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends without dropping anything (the caller checked [`Self::is_full`]).
    pub(crate) fn push(&mut self, stream: Stream, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.chunks.push_back((stream, data));
    }

    /// Appends, then drops the oldest bytes beyond `cap`: nobody is reading,
    /// and the newest output is what a re-attaching user wants to see.
    pub(crate) fn push_dropping_oldest(&mut self, stream: Stream, data: Bytes) {
        self.push(stream, data);
        while self.len > self.cap {
            let excess = self.len - self.cap;
            let Some((_, front)) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= excess {
                self.len -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(excess);
                self.len -= excess;
            }
        }
    }

    /// Up to `max` bytes of the oldest output, merging consecutive chunks of
    /// the same stream so the client gets few, large frames.
    pub(crate) fn pop_batch(&mut self, max: usize) -> Option<(Stream, Vec<u8>)> {
        let (stream, mut first) = self.chunks.pop_front()?;
        if first.len() > max {
            let rest = first.split_off(max);
            self.chunks.push_front((stream, rest));
        }
        let mut batch = first.to_vec();
        while let Some((next_stream, next)) = self.chunks.front() {
            if *next_stream != stream || batch.len() + next.len() > max {
                break;
            }
            batch.extend_from_slice(next);
            self.chunks.pop_front();
        }
        self.len -= batch.len();
        Some((stream, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_merges_same_stream() {
        let mut b = OutBuf::new(100);
        b.push(Stream::Stdout, Bytes::from_static(b"a"));
        b.push(Stream::Stdout, Bytes::from_static(b"b"));
        b.push(Stream::Stderr, Bytes::from_static(b"c"));
        b.push(Stream::Stdout, Bytes::from_static(b"d"));
        assert_eq!(b.pop_batch(10), Some((Stream::Stdout, b"ab".to_vec())));
        assert_eq!(b.pop_batch(10), Some((Stream::Stderr, b"c".to_vec())));
        assert_eq!(b.pop_batch(10), Some((Stream::Stdout, b"d".to_vec())));
        assert_eq!(b.pop_batch(10), None);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn batches_are_bounded() {
        let mut b = OutBuf::new(100);
        b.push(Stream::Stdout, Bytes::from_static(b"0123456789"));
        assert_eq!(b.pop_batch(4), Some((Stream::Stdout, b"0123".to_vec())));
        assert_eq!(b.len(), 6);
        assert_eq!(b.pop_batch(100), Some((Stream::Stdout, b"456789".to_vec())));
    }

    #[test]
    fn detached_output_keeps_the_newest_bytes() {
        let mut b = OutBuf::new(5);
        b.push_dropping_oldest(Stream::Stdout, Bytes::from_static(b"abc"));
        b.push_dropping_oldest(Stream::Stdout, Bytes::from_static(b"defg"));
        assert_eq!(b.len(), 5);
        assert!(b.is_full());
        assert_eq!(b.pop_batch(100), Some((Stream::Stdout, b"cdefg".to_vec())));
        b.push_dropping_oldest(Stream::Stderr, Bytes::from_static(b"0123456789"));
        assert_eq!(b.pop_batch(100), Some((Stream::Stderr, b"56789".to_vec())));
    }
}
