//! Server-sent events as the relay reads them: lines ended by LF, CRLF or CR; `data:` with
//! or without its space, over several lines; comments; UTF-8 split across network frames.
//! An event is read only once it is complete, and no event may grow past a limit.

/// Longest event the gateway reads in a stream: one past it ends the stream with an error.
pub(crate) const MAX_EVENT: usize = 1024 * 1024;

/// One event: its data lines joined by `\n`, its other fields as they came.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Event {
    /// The data, when the event has any.
    pub(crate) data: Option<String>,
    /// `event:`, `id:` and `retry:` lines (and unknown fields), as sent.
    fields: Vec<String>,
    /// Whether it held comments (keep-alives): relayed without their text.
    comment: bool,
}

/// What the framer makes of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete event.
    Event(Event),
    /// An event that is not UTF-8, or longer than the limit: the stream cannot be read.
    Unreadable,
}

/// Splits an event stream's bytes into events.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Bytes of events not yet complete, line ends made `\n`.
    pending: Vec<u8>,
    /// Where to look for the next blank line.
    searched: usize,
    /// The last byte was CR: an LF right after it ends the same line.
    after_cr: bool,
    limit: usize,
}

impl Framer {
    /// A framer refusing events longer than `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            searched: 0,
            after_cr: false,
            limit,
        }
    }

    /// Takes bytes; returns the events they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        for &byte in bytes {
            match (byte, self.after_cr) {
                (b'\n', true) => {}
                (b'\r', _) => self.pending.push(b'\n'),
                _ => self.pending.push(byte),
            }
            self.after_cr = byte == b'\r';
        }
        let mut frames = Vec::new();
        while let Some(blank) = self
            .pending
            .get(self.searched..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\n\n"))
        {
            let end = self.searched + blank + 2;
            let event: Vec<u8> = self.pending.drain(..end).collect();
            self.searched = 0;
            frames.push(if event.len() > self.limit {
                Frame::Unreadable
            } else {
                String::from_utf8(event)
                    .map_or(Frame::Unreadable, |text| Frame::Event(parse(&text)))
            });
        }
        self.searched = self.pending.len().saturating_sub(1);
        if self.pending.len() > self.limit {
            self.pending.clear();
            frames.push(Frame::Unreadable);
        }
        frames
    }
}

/// An event's lines (each ended by `\n`).
fn parse(text: &str) -> Event {
    let mut event = Event::default();
    for line in text.split('\n').filter(|line| !line.is_empty()) {
        if line.starts_with(':') {
            event.comment = true;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut event.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => event.data = Some(value.to_owned()),
            }
        } else {
            event.fields.push(line.to_owned());
        }
    }
    event
}

impl Event {
    /// The event as sent on, with `data` in place of its own.
    pub(crate) fn with_data(&self, data: Option<&str>) -> String {
        let mut out = String::new();
        if self.comment && self.fields.is_empty() && data.is_none() {
            out.push_str(":\n");
        }
        for field in &self.fields {
            out.push_str(field);
            out.push('\n');
        }
        for line in data.iter().flat_map(|data| data.split('\n')) {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }
}

impl Event {
    /// The `event:` name, when the event has one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.fields
            .iter()
            .find_map(|field| field.strip_prefix("event:"))
            .map(|name| name.strip_prefix(' ').unwrap_or(name))
    }
}

/// An event stream translated event by event into another dialect (see `routero_translate`):
/// read strictly like every stream the gateway reads; one that cannot be read, or that
/// breaks off, ends the translation (with the translator's error event).
pub(crate) fn translated(
    body: axum::body::Body,
    translator: impl routero_translate::StreamTranslator + Unpin + 'static,
) -> axum::body::Body {
    axum::body::Body::from_stream(Translated {
        source: Some(body.into_data_stream()),
        framer: Framer::new(MAX_EVENT),
        translator,
    })
}

/// The stream [`translated`] makes.
struct Translated<T> {
    /// `None` once the source ended.
    source: Option<axum::body::BodyDataStream>,
    framer: Framer,
    translator: T,
}

impl<T: routero_translate::StreamTranslator + Unpin> futures_util::Stream for Translated<T> {
    type Item = Result<axum::body::Bytes, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use futures_util::StreamExt;
        let this = self.get_mut();
        loop {
            let Some(source) = this.source.as_mut() else {
                return std::task::Poll::Ready(None);
            };
            let mut out = String::new();
            match std::task::ready!(source.poll_next_unpin(cx)) {
                Some(Ok(bytes)) => {
                    for frame in this.framer.push(&bytes) {
                        let Frame::Event(event) = frame else {
                            this.translator.end(&mut out);
                            this.source = None;
                            break;
                        };
                        if let Some(data) = &event.data {
                            this.translator.event(event.name(), data, &mut out);
                        }
                    }
                }
                Some(Err(_)) | None => {
                    this.translator.end(&mut out);
                    this.source = None;
                }
            }
            if !out.is_empty() {
                return std::task::Poll::Ready(Some(Ok(axum::body::Bytes::from(out))));
            }
        }
    }
}

/// Whether an answer with these headers is an event stream.
pub(crate) fn is_event_stream(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// A data-only event.
pub(crate) fn data_event(data: &str) -> String {
    Event::default().with_data(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[&[u8]]) -> Vec<Frame> {
        let mut framer = Framer::new(64);
        frames.iter().flat_map(|bytes| framer.push(bytes)).collect()
    }

    fn data(text: &str) -> Frame {
        Frame::Event(Event {
            data: Some(text.into()),
            ..Event::default()
        })
    }

    #[test]
    fn every_framing_reads_the_same() {
        for frames in [
            &[b"data: {\"a\":1}\n\n".as_slice()][..],
            &[b"data:{\"a\":1}\n\n"],
            &[b"data: {\"a\":1}\r\n\r\n"],
            &[b"data: {\"a\":1}\r\r"],
            &[b"data: {\"a\"", b":1}\r", b"\n\r\n"],
            &[b": keep-alive\ndata: {\"a\":1}\n\n"],
        ] {
            let got = events(frames);
            assert_eq!(got.len(), 1, "{frames:?}");
            let Some(Frame::Event(event)) = got.first() else {
                unreachable!("{got:?}");
            };
            assert_eq!(event.data.as_deref(), Some("{\"a\":1}"), "{frames:?}");
        }
    }

    #[test]
    fn data_lines_join_and_utf8_may_split_across_frames() {
        assert_eq!(
            events(&[b"data: {\"a\":\ndata: 1}\n\n"]),
            [data("{\"a\":\n1}")]
        );
        let text = "data: é\n\n".as_bytes();
        let (head, tail) = text.split_at(7);
        assert_eq!(events(&[head, tail]), [data("é")]);
    }

    #[test]
    fn what_cannot_be_read_is_said() {
        assert_eq!(events(&[b"data: \xff\xfe\n\n"]), [Frame::Unreadable]);
        assert_eq!(events(&[&[b'x'; 100]]), [Frame::Unreadable]);
    }

    #[test]
    fn fields_and_comments_are_relayed_without_comment_text() {
        let got = events(&[b"event: ping\nid: 7\ndata: x\n\n: secret comment\n\n"]);
        let [Frame::Event(first), Frame::Event(second)] = got.as_slice() else {
            unreachable!("{got:?}");
        };
        assert_eq!(
            first.with_data(Some("y")),
            "event: ping\nid: 7\ndata: y\n\n"
        );
        assert_eq!(second.with_data(None), ":\n\n");
    }
}
