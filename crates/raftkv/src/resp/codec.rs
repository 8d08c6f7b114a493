//! RESP framing: requests in, replies out (RESP2, or RESP3 once a client asks with HELLO 3).
//!
//! The decoder is incremental: it consumes each complete header and bulk string as soon as
//! it has arrived and keeps the request built so far, so a request that trickles in is never
//! parsed twice. It yields a request as its arguments (never empty: empty arrays and blank
//! inline lines are skipped, as Redis does).
//!
//! A request over a size limit (one bulk string, or all of them together) is refused as soon
//! as its header says so, and the rest of it is then read and dropped as it arrives, never
//! buffered: the client gets an error for that request and the connection goes on.

use super::RespLimits;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt::Write as _;
use tokio_util::codec::{Decoder, Encoder};

/// The longest `*<n>` or `$<n>` header line: a type byte, a sign, the 19 digits of the largest
/// `i64` and CRLF, with room to spare.
const MAX_HEADER_LINE: usize = 32;

/// Arguments set aside up front for a request array, whose declared length is untrusted.
const INITIAL_ARGS: usize = 16;

/// The longest bulk string that is read and dropped rather than refused as a protocol error
/// (Redis's `proto-max-bulk-len`): beyond it a length is taken for garbage.
pub const MAX_SKIPPED_BULK: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// The input is not RESP, or breaks a [`RespLimits`] bound that cannot be recovered from
    /// (an array too long, an inline line too long). The connection cannot be resynchronised
    /// and must be closed.
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// The request breaks a size limit: it is refused with this message (the reply's text),
    /// and the decoder drops the rest of it as it arrives. Decoding goes on after it.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn protocol(msg: impl Into<String>) -> RespError {
    RespError::Protocol(msg.into())
}

/// The protocol a connection speaks: RESP2 until the client says `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`. Line breaks in the text are sent as spaces.
    Simple(String),
    /// `-text`, where the text starts with an error code such as `ERR`. Line breaks in the
    /// text are sent as spaces.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// Nothing: the null bulk string `$-1` in RESP2, `_` in RESP3.
    Null,
    /// The null array `*-1` in RESP2 (a transaction that did not run), `_` in RESP3.
    NullArray,
    Array(Vec<Reply>),
    /// A map in RESP3 (`%`), a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// An `ERR` error with this message.
    pub fn error(msg: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {msg}"))
    }

    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::Bulk(data.into())
    }

    /// Appends the RESP2 wire form of the reply to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        self.encode_as(Protocol::Resp2, dst);
    }

    /// Appends the wire form of the reply in `protocol` to `dst`.
    pub fn encode_as(&self, protocol: Protocol, dst: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(text) => put_line(dst, b'+', text),
            Reply::Error(text) => put_line(dst, b'-', text),
            Reply::Integer(n) => put_header(dst, b':', *n),
            Reply::Bulk(data) => {
                put_header(dst, b'$', data.len() as i64);
                dst.extend_from_slice(data);
                dst.extend_from_slice(b"\r\n");
            }
            Reply::Null | Reply::NullArray if resp3 => dst.extend_from_slice(b"_\r\n"),
            Reply::Null => dst.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray => dst.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                put_header(dst, b'*', items.len() as i64);
                for item in items {
                    item.encode_as(protocol, dst);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    put_header(dst, b'%', pairs.len() as i64);
                } else {
                    put_header(dst, b'*', 2 * pairs.len() as i64);
                }
                for (key, value) in pairs {
                    key.encode_as(protocol, dst);
                    value.encode_as(protocol, dst);
                }
            }
        }
    }
}

fn put_line(dst: &mut BytesMut, prefix: u8, text: &str) {
    dst.reserve(text.len() + 3);
    dst.put_u8(prefix);
    // A line break inside a simple string or error would end it early and desynchronise
    // the client.
    dst.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    dst.extend_from_slice(b"\r\n");
}

fn put_header(dst: &mut BytesMut, prefix: u8, n: i64) {
    dst.put_u8(prefix);
    // Writing to a BytesMut cannot fail: it grows as needed.
    let _ = write!(dst, "{n}\r\n");
}

/// The RESP codec: decodes requests (arrays of bulk strings, or inline commands) and encodes
/// [`Reply`]s.
#[derive(Debug)]
pub struct RespCodec {
    limits: RespLimits,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Between requests. The first `scanned` bytes of the buffer are known to hold no line
    /// end: the part of an inline command already searched.
    Idle { scanned: usize },
    /// Inside a request array.
    Array(Partial),
    /// Dropping the rest of a refused request: `bulk` bytes of the current bulk string (its
    /// CRLF included) if its header was read, then `remaining` more elements.
    Skipping {
        remaining: usize,
        bulk: Option<usize>,
    },
}

#[derive(Debug)]
struct Partial {
    args: Vec<Bytes>,
    /// Elements still to come.
    remaining: usize,
    /// Payload bytes so far.
    bytes: usize,
    /// The length of the bulk string whose header has been consumed and whose body has not.
    bulk: Option<usize>,
}

impl RespCodec {
    pub fn new(limits: RespLimits) -> RespCodec {
        RespCodec {
            limits,
            state: State::Idle { scanned: 0 },
        }
    }
}

impl Decoder for RespCodec {
    type Item = Vec<Bytes>;
    type Error = RespError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        let limits = self.limits;
        loop {
            match &mut self.state {
                State::Idle { scanned } => {
                    let Some(&first) = src.first() else {
                        return Ok(None);
                    };
                    match first {
                        b'*' => {
                            let Some(n) = take_header(src, "invalid multibulk length")? else {
                                return Ok(None);
                            };
                            if n == 0 || n == -1 {
                                continue;
                            }
                            let len = usize::try_from(n)
                                .ok()
                                .filter(|&len| len <= limits.max_array_len)
                                .ok_or_else(|| protocol("invalid multibulk length"))?;
                            self.state = State::Array(Partial {
                                args: Vec::with_capacity(len.min(INITIAL_ARGS)),
                                remaining: len,
                                bytes: 0,
                                bulk: None,
                            });
                        }
                        // Other RESP types are never requests: reject them rather than run
                        // them as inline commands.
                        b'$' | b':' | b'+' | b'-' => {
                            return Err(protocol(format!(
                                "expected '*', got '{}'",
                                char::from(first)
                            )));
                        }
                        _ => match decode_inline(&limits, scanned, src)? {
                            None => return Ok(None),
                            Some(args) if args.is_empty() => continue,
                            Some(args) => return Ok(Some(args)),
                        },
                    }
                }
                State::Array(partial) => match partial.bulk {
                    None => {
                        let Some(len) = take_bulk_header(src)? else {
                            return Ok(None);
                        };
                        let refusal = if len > limits.max_bulk_bytes {
                            Some(format!(
                                "ERR value of {len} bytes exceeds the limit of {} bytes",
                                limits.max_bulk_bytes
                            ))
                        } else if partial.bytes.saturating_add(len) > limits.max_request_bytes {
                            Some(format!(
                                "ERR request exceeds the limit of {} bytes",
                                limits.max_request_bytes
                            ))
                        } else {
                            None
                        };
                        if let Some(refusal) = refusal {
                            self.state = State::Skipping {
                                remaining: partial.remaining - 1,
                                bulk: Some(len + 2),
                            };
                            return Err(RespError::Refused(refusal));
                        }
                        partial.bulk = Some(len);
                    }
                    Some(len) => {
                        let Some(end) = len.checked_add(2) else {
                            return Err(protocol("invalid bulk length"));
                        };
                        if src.len() < end {
                            return Ok(None);
                        }
                        if &src[len..end] != b"\r\n" {
                            return Err(protocol("expected CRLF after bulk string"));
                        }
                        let data = src.split_to(len).freeze();
                        src.advance(2);
                        partial.args.push(data);
                        partial.bytes += len;
                        partial.remaining -= 1;
                        partial.bulk = None;
                        if partial.remaining == 0 {
                            let args = std::mem::take(&mut partial.args);
                            self.state = State::Idle { scanned: 0 };
                            return Ok(Some(args));
                        }
                    }
                },
                State::Skipping { remaining, bulk } => match bulk {
                    Some(left) => {
                        let dropped = (*left).min(src.len());
                        src.advance(dropped);
                        *left -= dropped;
                        if *left > 0 {
                            return Ok(None);
                        }
                        *bulk = None;
                        if *remaining == 0 {
                            self.state = State::Idle { scanned: 0 };
                        }
                    }
                    None => {
                        let Some(len) = take_bulk_header(src)? else {
                            return Ok(None);
                        };
                        *remaining -= 1;
                        *bulk = Some(len + 2);
                    }
                },
            }
        }
    }
}

impl Encoder<Reply> for RespCodec {
    type Error = RespError;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), RespError> {
        reply.encode(dst);
        Ok(())
    }
}

/// Consumes the `$<n>\r\n` header of a bulk string inside a request array and returns `n`,
/// or `None` if it has not fully arrived. Any length up to [`MAX_SKIPPED_BULK`] is returned,
/// for the caller to accept or refuse; beyond it, or anything but `$`, is a protocol error.
fn take_bulk_header(src: &mut BytesMut) -> Result<Option<usize>, RespError> {
    let Some(&first) = src.first() else {
        return Ok(None);
    };
    if first != b'$' {
        return Err(protocol(format!(
            "expected '$', got '{}'",
            first.escape_ascii()
        )));
    }
    let Some(n) = take_header(src, "invalid bulk length")? else {
        return Ok(None);
    };
    usize::try_from(n)
        .ok()
        .filter(|&len| len <= MAX_SKIPPED_BULK)
        .map(Some)
        .ok_or_else(|| protocol("invalid bulk length"))
}

/// Consumes a `*<n>\r\n` or `$<n>\r\n` line (the type byte is already checked) and returns
/// `n`, or `None` if the line has not fully arrived.
fn take_header(src: &mut BytesMut, invalid: &str) -> Result<Option<i64>, RespError> {
    let window = &src[..src.len().min(MAX_HEADER_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if window.len() == MAX_HEADER_LINE {
            return Err(protocol(invalid));
        }
        // Reject a bad digit now rather than wait for a line end that may never come.
        if !window[1..]
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b'-' || b == b'\r')
        {
            return Err(protocol(invalid));
        }
        return Ok(None);
    };
    if lf < 2 || window[lf - 1] != b'\r' {
        return Err(protocol("expected CRLF after length"));
    }
    let n = parse_int(&window[1..lf - 1]).ok_or_else(|| protocol(invalid))?;
    src.advance(lf + 1);
    Ok(Some(n))
}

/// A decimal `i64`: an optional `-` and at least one digit, nothing else.
fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

/// Consumes one inline command if its line end has arrived. `scanned` remembers how much of
/// the buffer was searched already, so that a long line arriving in pieces is searched once.
fn decode_inline(
    limits: &RespLimits,
    scanned: &mut usize,
    src: &mut BytesMut,
) -> Result<Option<Vec<Bytes>>, RespError> {
    // The line, then CR LF.
    let window = src.len().min(limits.max_inline_bytes.saturating_add(2));
    let start = (*scanned).min(window);
    let Some(i) = src[start..window].iter().position(|&b| b == b'\n') else {
        // No line end among the first `max_inline_bytes + 2` bytes: the line is too long
        // whatever follows.
        if window == limits.max_inline_bytes.saturating_add(2) {
            return Err(protocol("too big inline request"));
        }
        *scanned = window;
        return Ok(None);
    };
    let lf = start + i;
    let line = src.split_to(lf + 1);
    *scanned = 0;
    let mut text = &line[..lf];
    if let [rest @ .., b'\r'] = text {
        text = rest;
    }
    if text.len() > limits.max_inline_bytes {
        return Err(protocol("too big inline request"));
    }
    let args = split_inline(text)?;
    if args.len() > limits.max_array_len {
        return Err(protocol("too many arguments in inline request"));
    }
    Ok(Some(args))
}

/// Splits an inline command into words separated by whitespace. As in `redis-cli`, a word
/// that starts with `"` runs to the matching quote and may hold the escapes `\n \r \t \b \a
/// \xHH`, and one that starts with `'` may hold `\'`; a closing quote must end the word.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, RespError> {
    let unbalanced = || protocol("unbalanced quotes in request");
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let mut word = Vec::new();
        match line[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let &b = line.get(i).ok_or_else(unbalanced)?;
                    if b == quote {
                        i += 1;
                        if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(unbalanced());
                        }
                        break;
                    }
                    if b == b'\\' && i + 1 < line.len() {
                        let (byte, used) = unescape(quote, &line[i + 1..]);
                        word.push(byte);
                        i += 1 + used;
                    } else {
                        word.push(b);
                        i += 1;
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(word));
    }
}

/// The byte an escape inside quotes stands for, given the bytes after the backslash (at least
/// one), and how many of them it uses.
fn unescape(quote: u8, rest: &[u8]) -> (u8, usize) {
    if quote == b'\'' {
        return match rest[0] {
            b'\'' => (b'\'', 1),
            // Any other backslash in single quotes is literal.
            _ => (b'\\', 0),
        };
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    match rest {
        [b'x', hi, lo, ..] if hex(*hi).is_some() && hex(*lo).is_some() => {
            let value = hex(*hi).unwrap_or(0) * 16 + hex(*lo).unwrap_or(0);
            (value as u8, 3)
        }
        [b'n', ..] => (b'\n', 1),
        [b'r', ..] => (b'\r', 1),
        [b't', ..] => (b'\t', 1),
        [b'b', ..] => (0x08, 1),
        [b'a', ..] => (0x07, 1),
        [other, ..] => (*other, 1),
        [] => (b'\\', 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> RespLimits {
        RespLimits::default()
    }

    fn command(args: &[&[u8]]) -> Vec<Bytes> {
        args.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    }

    fn encode_request(args: &[Vec<u8>]) -> BytesMut {
        let reply = Reply::Array(args.iter().map(|a| Reply::bulk(a.clone())).collect());
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        buf
    }

    /// Decodes everything in `input` at once.
    fn decode_all(limits: RespLimits, input: &[u8]) -> Result<Vec<Vec<Bytes>>, String> {
        let mut codec = RespCodec::new(limits);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(args)) => out.push(args),
                Ok(None) => return Ok(out),
                Err(RespError::Refused(msg)) => out.push(vec![refused(&msg)]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A refused request, as the helpers below list it among the decoded ones.
    fn refused(msg: &str) -> Bytes {
        Bytes::from(format!("refused: {msg}"))
    }

    /// Feeds `input` one byte at a time, decoding after each.
    fn decode_bytewise(limits: RespLimits, input: &[u8]) -> Result<Vec<Vec<Bytes>>, String> {
        let mut codec = RespCodec::new(limits);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.put_u8(b);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(args)) => out.push(args),
                    Ok(None) => break,
                    Err(RespError::Refused(msg)) => out.push(vec![refused(&msg)]),
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(out)
    }

    fn encoded(reply: Reply) -> Vec<u8> {
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn encodes_every_reply_type() {
        assert_eq!(encoded(Reply::ok()), b"+OK\r\n");
        assert_eq!(encoded(Reply::error("boom")), b"-ERR boom\r\n");
        assert_eq!(encoded(Reply::Integer(-42)), b":-42\r\n");
        assert_eq!(encoded(Reply::bulk("hi")), b"$2\r\nhi\r\n");
        assert_eq!(encoded(Reply::bulk("")), b"$0\r\n\r\n");
        assert_eq!(encoded(Reply::Null), b"$-1\r\n");
        assert_eq!(encoded(Reply::Array(vec![])), b"*0\r\n");
        let nested = Reply::Array(vec![Reply::Integer(1), Reply::bulk("a")]);
        assert_eq!(encoded(nested), b"*2\r\n:1\r\n$1\r\na\r\n");
    }

    #[test]
    fn line_breaks_in_errors_cannot_split_the_reply() {
        assert_eq!(encoded(Reply::error("a\r\nb")), b"-ERR a  b\r\n");
        assert_eq!(encoded(Reply::Simple("x\ny".into())), b"+x y\r\n");
    }

    #[test]
    fn decodes_pipelined_arrays() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let out = decode_all(limits(), input).unwrap();
        assert_eq!(out, vec![command(&[b"GET", b"k"]), command(&[b"PING"])]);
    }

    #[test]
    fn bulk_strings_are_binary_safe() {
        let input = b"*2\r\n$4\r\na\r\nb\r\n$0\r\n\r\n";
        let out = decode_all(limits(), input).unwrap();
        assert_eq!(out, vec![command(&[b"a\r\nb", b""])]);
    }

    #[test]
    fn empty_arrays_and_blank_lines_are_skipped() {
        let input = b"*0\r\n*-1\r\n\r\n\n   \r\nPING\r\n";
        assert_eq!(
            decode_all(limits(), input).unwrap(),
            vec![command(&[b"PING"])]
        );
    }

    #[test]
    fn decodes_inline_commands() {
        let input = b"PING\r\nset k  v\nGET\tk\r\n";
        let out = decode_all(limits(), input).unwrap();
        assert_eq!(
            out,
            vec![
                command(&[b"PING"]),
                command(&[b"set", b"k", b"v"]),
                command(&[b"GET", b"k"]),
            ]
        );
    }

    #[test]
    fn inline_quotes_and_escapes() {
        let input = b"SET \"a b\" 'it\\'s' \"\\x41\\n\\\"\" '\\n'\r\n";
        let out = decode_all(limits(), input).unwrap();
        assert_eq!(
            out,
            vec![command(&[b"SET", b"a b", b"it's", b"A\n\"", b"\\n"])]
        );
        assert_eq!(
            decode_all(limits(), b"\"\"\r\n").unwrap(),
            vec![command(&[b""])]
        );
        for bad in [&b"SET \"a\r\n"[..], b"SET 'a\r\n", b"SET \"a\"b\r\n"] {
            let err = decode_all(limits(), bad).unwrap_err();
            assert!(err.contains("unbalanced quotes"), "{err}");
        }
    }

    #[test]
    fn an_inline_line_may_be_exactly_the_limit() {
        let limits = RespLimits {
            max_inline_bytes: 8,
            ..limits()
        };
        let out = decode_all(limits, b"12345678\r\n").unwrap();
        assert_eq!(out, vec![command(&[b"12345678"])]);
        let out = decode_all(limits, b"12345678\n").unwrap();
        assert_eq!(out, vec![command(&[b"12345678"])]);
        assert!(decode_all(limits, b"123456789\n").is_err());
        assert!(decode_all(limits, b"123456789\r\n").is_err());
        // Without a line end, the error comes as soon as the limit is certainly passed.
        assert!(decode_all(limits, b"12345678\r").unwrap().is_empty());
        assert!(decode_all(limits, b"12345678\rx").is_err());
        assert!(decode_bytewise(limits, b"1234567890xxxxxxxx").is_err());
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"*2\r\n$3\r\nGET\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"$999999999999\r\n", "expected '*', got '$'"),
            (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$99999999999999999999\r\n", "invalid bulk length"),
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*abc", "invalid multibulk length"),
            (b"*\r\n", "invalid multibulk length"),
            (b"*-2\r\n", "invalid multibulk length"),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"* 1\r\n", "invalid multibulk length"),
            (b"*1\r\n:5\r\n", "expected '$', got ':'"),
            (b"*1\r\n\x00", "expected '$', got '\\x00'"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*70000\r\n", "invalid multibulk length"),
            (b"*99999999999\r\n", "invalid multibulk length"),
            (b"*1\n", "expected CRLF"),
            (b"*1\r\n$3\n", "expected CRLF"),
            (b"*1\r\n$3\r\nGETxx", "expected CRLF after bulk string"),
            (b"*1\r\n$3\r\nGET\n\r", "expected CRLF after bulk string"),
            (b":5\r\n", "expected '*', got ':'"),
            (b"+OK\r\n", "expected '*', got '+'"),
            (b"-ERR\r\n", "expected '*', got '-'"),
        ];
        for &(input, expected) in cases {
            for result in [
                decode_all(limits(), input),
                decode_bytewise(limits(), input),
            ] {
                let err = result.expect_err(&String::from_utf8_lossy(input));
                assert!(err.starts_with("Protocol error: "), "{err}");
                assert!(err.contains(expected), "{input:?}: {err}");
            }
        }
    }

    #[test]
    fn a_header_line_without_an_end_is_refused_once_too_long() {
        let input = [b"*1".as_slice(), &[b'0'; 40]].concat();
        assert!(decode_all(limits(), &input).is_err());
    }

    #[test]
    fn incomplete_input_waits_for_more() {
        for input in [
            &b"*"[..],
            b"*2\r",
            b"*2\r\n$3\r\nGE",
            b"*2\r\n$3\r\nGET\r",
            b"*2\r\n$3\r\nGET\r\n",
            b"PING",
        ] {
            assert!(decode_all(limits(), input).unwrap().is_empty(), "{input:?}");
        }
    }

    #[test]
    fn bulk_and_request_limits() {
        let limits = RespLimits {
            max_bulk_bytes: 4,
            max_request_bytes: 6,
            max_array_len: 3,
            ..limits()
        };
        let ok = encode_request(&[b"abcd".to_vec(), b"ef".to_vec()]);
        assert_eq!(decode_all(limits, &ok).unwrap().len(), 1);
        // A bulk string over the limit, or a request over its limit, is refused and skipped
        // (whole, wherever it breaks the limit); the requests around it are decoded.
        let ping = encode_request(&[b"PING".to_vec()]);
        for oversized in [
            encode_request(&[b"abcde".to_vec()]),
            encode_request(&[b"SET".to_vec(), b"abcdefgh".to_vec(), b"x".to_vec()]),
            encode_request(&[b"abcd".to_vec(), b"efg".to_vec()]),
        ] {
            let input = [&ping[..], &oversized[..], &ping[..]].concat();
            for decoded in [decode_all(limits, &input), decode_bytewise(limits, &input)] {
                let decoded = decoded.unwrap();
                assert_eq!(decoded.len(), 3, "{decoded:?}");
                assert_eq!(decoded[0], command(&[b"PING"]));
                assert!(decoded[1][0].starts_with(b"refused: ERR "), "{decoded:?}");
                assert_eq!(decoded[2], command(&[b"PING"]));
            }
        }
        let bulk = decode_all(limits, &encode_request(&[b"abcde".to_vec()])).unwrap();
        assert_eq!(
            bulk[0][0],
            refused("ERR value of 5 bytes exceeds the limit of 4 bytes")
        );
        let request = decode_all(
            limits,
            &encode_request(&[b"abcd".to_vec(), b"efg".to_vec()]),
        );
        assert_eq!(
            request.unwrap()[0][0],
            refused("ERR request exceeds the limit of 6 bytes")
        );
        // A length beyond anything that could be meant is still garbage.
        assert!(decode_all(limits, b"*1\r\n$99999999999\r\n")
            .unwrap_err()
            .contains("invalid bulk length"));
        let array = encode_request(&[vec![], vec![], vec![], vec![]]);
        assert!(decode_all(limits, &array).is_err());
        assert!(decode_all(limits, b"a b c d\r\n").is_err());
    }

    #[test]
    fn a_huge_declared_length_sets_nothing_aside() {
        let mut codec = RespCodec::new(limits());
        let mut buf = BytesMut::from(&b"*1024\r\n$1048000\r\nab"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        let State::Array(partial) = &codec.state else {
            panic!("expected to be inside an array");
        };
        assert!(partial.args.capacity() <= INITIAL_ARGS);
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn the_codec_is_ready_for_the_next_request() {
        let mut codec = RespCodec::new(limits());
        let mut buf = encode_request(&[b"GET".to_vec(), b"k".to_vec()]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
        buf.extend_from_slice(b"PING\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(command(&[b"PING"])));
    }

    proptest! {
        #[test]
        fn arrays_of_bulk_strings_round_trip(
            requests in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
                1..5,
            )
        ) {
            let mut input = BytesMut::new();
            for args in &requests {
                input.extend_from_slice(&encode_request(args));
            }
            let expected: Vec<Vec<Bytes>> = requests
                .iter()
                .map(|args| args.iter().map(|a| Bytes::copy_from_slice(a)).collect())
                .collect();
            prop_assert_eq!(&decode_all(limits(), &input).unwrap(), &expected);
            prop_assert_eq!(&decode_bytewise(limits(), &input).unwrap(), &expected);
        }

        #[test]
        fn inline_words_round_trip(
            words in prop::collection::vec("[a-zA-Z][a-zA-Z0-9_:.-]{0,11}", 1..8),
            crlf in any::<bool>(),
        ) {
            let line = format!("{}{}", words.join(" "), if crlf { "\r\n" } else { "\n" });
            let expected: Vec<Bytes> =
                words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
            prop_assert_eq!(decode_bytewise(limits(), line.as_bytes()).unwrap(), vec![expected]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in prop::collection::vec(any::<u8>(), 0..256),
            small in any::<bool>(),
        ) {
            let limits = if small {
                RespLimits {
                    max_bulk_bytes: 8,
                    max_array_len: 4,
                    max_inline_bytes: 16,
                    max_request_bytes: 12,
                    ..limits()
                }
            } else {
                limits()
            };
            let _ = decode_all(limits, &input);
            let _ = decode_bytewise(limits, &input);
        }

        #[test]
        fn mutated_requests_never_panic(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 1..4),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut input = encode_request(&args).to_vec();
            for (at, byte) in flips {
                let i = at.index(input.len());
                input[i] = byte;
            }
            let _ = decode_all(limits(), &input);
            let _ = decode_bytewise(limits(), &input);
        }
    }
}
