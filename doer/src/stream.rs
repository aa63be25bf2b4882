//! The pieces of a streamed invocation's output (a Doee's `ctx.write`), as
//! the Doer keeps them: how many the origin has room for, the one waiting
//! beyond that, and what was sent, for the record.
//!
//! The origin starts with room for [`STREAM_WINDOW`] pieces and makes room
//! for one more with each piece it takes (`Control::Pull`): a Doee ahead of
//! its reader by the window waits in `write` until then.

use bytes::Bytes;
use isms_ipc::STREAM_WINDOW;

/// One streamed invocation's pieces.
pub struct Stream {
    /// Pieces the origin has room for.
    credit: u32,
    /// A piece the Doee wrote beyond that, waiting (its Worker waits too).
    parked: Option<Bytes>,
    /// What was sent, for the record, up to its bound.
    sent: Vec<u8>,
    /// Whether some of it was left out of `sent`.
    truncated: bool,
    /// Bytes written, against the output's bound.
    bytes: usize,
    /// The origin gave the invocation up before it started.
    cancelled: bool,
}

/// What to do with a piece the Doee wrote.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// Send it, and let the Doee go on.
    Send(Bytes),
    /// Keep it until the origin makes room; the Doee waits.
    Wait,
    /// Fail the Doee's write, saying why.
    Refuse(String),
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            credit: STREAM_WINDOW,
            parked: None,
            sent: Vec::new(),
            truncated: false,
            bytes: 0,
            cancelled: false,
        }
    }
}

impl Stream {
    /// A piece written, within `max_output` bytes in all, kept for the
    /// record up to `keep` bytes.
    pub fn write(&mut self, piece: Bytes, max_output: usize, keep: usize) -> Write {
        // Counted here too: the Executor's count is the Worker's word.
        self.bytes += piece.len();
        if self.cancelled {
            return Write::Refuse("the client went away".into());
        }
        if self.bytes > max_output {
            return Write::Refuse(format!("the output is larger than {max_output} bytes"));
        }
        let room = keep.saturating_sub(self.sent.len());
        self.truncated |= piece.len() > room;
        self.sent.extend_from_slice(&piece[..piece.len().min(room)]);
        if self.credit == 0 {
            self.parked = Some(piece);
            return Write::Wait;
        }
        self.credit -= 1;
        Write::Send(piece)
    }

    /// The origin took a piece: the one waiting, if any, goes now (and its
    /// Doee goes on); else there is room for one more.
    pub fn pulled(&mut self) -> Option<Bytes> {
        let parked = self.parked.take();
        if parked.is_none() {
            self.credit = (self.credit + 1).min(STREAM_WINDOW);
        }
        parked
    }

    /// The origin gave up before the invocation started: its first write
    /// fails.
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// The record's output: what was sent, then `answer` (what the Doee
    /// returned), up to `keep` bytes; and whether some was left out.
    pub fn record(self, answer: &Bytes, keep: usize) -> (Bytes, bool) {
        if self.sent.is_empty() && !self.truncated {
            return (answer.slice(..answer.len().min(keep)), answer.len() > keep);
        }
        let room = keep.saturating_sub(self.sent.len());
        let mut whole = self.sent;
        whole.extend_from_slice(&answer[..answer.len().min(room)]);
        (Bytes::from(whole), self.truncated || answer.len() > room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn a_writer_ahead_by_the_window_waits_for_a_pull() {
        let mut stream = Stream::default();
        for _ in 0..STREAM_WINDOW {
            assert_eq!(
                stream.write(piece("x"), 1 << 20, 1 << 10),
                Write::Send(piece("x"))
            );
        }
        assert_eq!(stream.write(piece("late"), 1 << 20, 1 << 10), Write::Wait);
        assert_eq!(
            stream.pulled(),
            Some(piece("late")),
            "the waiting piece goes"
        );
        assert_eq!(stream.pulled(), None);
        assert_eq!(
            stream.write(piece("y"), 1 << 20, 1 << 10),
            Write::Send(piece("y"))
        );
        // Room never grows past the window.
        for _ in 0..3 * STREAM_WINDOW {
            stream.pulled();
        }
        for _ in 0..STREAM_WINDOW {
            assert!(matches!(
                stream.write(piece("z"), 1 << 20, 1 << 10),
                Write::Send(_)
            ));
        }
        assert_eq!(stream.write(piece("z"), 1 << 20, 1 << 10), Write::Wait);
    }

    #[test]
    fn the_record_keeps_the_pieces_then_the_answer_within_its_bound() {
        let mut stream = Stream::default();
        stream.write(piece("first\n"), 100, 10);
        stream.write(piece("second\n"), 100, 10);
        assert_eq!(
            stream.record(&piece("done"), 10),
            (piece("first\nseco"), true)
        );
        let mut stream = Stream::default();
        stream.write(piece("a"), 100, 10);
        assert_eq!(stream.record(&piece("b"), 10), (piece("ab"), false));
        assert_eq!(
            Stream::default().record(&piece("0123456789ab"), 10),
            (piece("0123456789"), true),
            "nothing streamed: the answer alone"
        );
    }

    #[test]
    fn writes_past_the_bound_or_after_a_cancel_fail() {
        let mut stream = Stream::default();
        assert!(matches!(stream.write(piece("12345"), 8, 8), Write::Send(_)));
        assert!(
            matches!(stream.write(piece("6789"), 8, 8), Write::Refuse(why) if why.contains("larger than 8"))
        );
        let mut stream = Stream::default();
        stream.cancel();
        assert_eq!(
            stream.write(piece("x"), 8, 8),
            Write::Refuse("the client went away".into())
        );
    }
}
