//! The chunked transfer coding of an upstream response body (RFC 9112 section 7.1), decoded from the
//! connection's read buffer into data frames that share it (no copy) and a trailer section, which is
//! passed on as a trailers frame the way hyper's client passed it.
//!
//! Pure: no I/O. The grammar is hyper's, byte for byte, including its defences against request smuggling
//! through chunk framing: a size needs at least one hex digit and must not overflow, a line ends with CRLF
//! only (a bare LF inside an extension is refused), extensions and trailers are bounded.

use super::Error;
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

/// Bytes of chunk extensions accepted over a whole body (hyper's limit); they are read and ignored.
const EXTENSIONS_LIMIT: usize = 16 * 1024;
/// Bytes of trailer section accepted (hyper's limit).
const TRAILERS_LIMIT: usize = 16 * 1024;
/// Trailer fields accepted.
const MAX_TRAILERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first byte of a size line: a hex digit.
    Start,
    Size,
    /// Blanks after the size.
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk's size line: the end, or a trailer field.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// What decoding the buffer gave.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended cleanly: nothing of it is left in the buffer.
    End,
    /// The buffer holds no more of the body: read more.
    NeedMore,
}

#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    extensions: usize,
    trailers: Vec<u8>,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: State::Start, size: 0, extensions: 0, trailers: Vec::new() }
    }
}

fn bad(what: &'static str) -> Error {
    Error::Chunk(what)
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            if self.state == State::Done {
                return Ok(Decoded::End);
            }
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (buf.len() as u64).min(self.size) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.first() else { return Ok(Decoded::NeedMore) };
            buf.advance(1);
            self.state = match (self.state, b) {
                (State::Start, _) => {
                    self.size = u64::from(hex(b).ok_or(bad("a chunk size line without a size"))?);
                    State::Size
                }
                (State::Size, b'\t' | b' ') => State::SizeLws,
                (State::Size, b';') | (State::SizeLws, b';') => State::Extension,
                (State::Size, b'\r') | (State::SizeLws, b'\r') => State::SizeLf,
                (State::Size, _) => {
                    let digit = hex(b).ok_or(bad("a chunk size that is not hexadecimal"))?;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(digit)))
                        .ok_or(bad("a chunk size too large"))?;
                    State::Size
                }
                (State::SizeLws, b'\t' | b' ') => State::SizeLws,
                (State::SizeLws, _) => return Err(bad("a chunk size with blanks inside")),
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(bad("a chunk extension with a bare LF")),
                (State::Extension, _) => {
                    self.extensions += 1;
                    if self.extensions > EXTENSIONS_LIMIT {
                        return Err(bad("chunk extensions too large"));
                    }
                    State::Extension
                }
                (State::SizeLf, b'\n') if self.size == 0 => State::EndCr,
                (State::SizeLf, b'\n') => State::Data,
                (State::SizeLf, _) => return Err(bad("a chunk size line not ended by CRLF")),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Start,
                (State::DataCr | State::DataLf, _) => return Err(bad("a chunk not followed by CRLF")),
                (State::EndCr, b'\r') => State::EndLf,
                (State::EndCr, _) | (State::Trailer, _) if b != b'\r' => {
                    self.push_trailer(b)?;
                    State::Trailer
                }
                (State::Trailer, _) => {
                    self.push_trailer(b)?;
                    State::TrailerLf
                }
                (State::TrailerLf, b'\n') => {
                    self.push_trailer(b)?;
                    State::EndCr
                }
                (State::TrailerLf, _) => return Err(bad("a trailer field not ended by CRLF")),
                (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    if self.trailers.is_empty() {
                        return Ok(Decoded::End);
                    }
                    return self.take_trailers().map(Decoded::Trailers);
                }
                (State::EndLf, _) => return Err(bad("the last chunk not ended by CRLF")),
                // Not reached: EndCr is matched by its two arms above, Data and Done before a byte is read.
                (State::EndCr | State::Data | State::Done, _) => return Err(bad("a chunk decoder out of step")),
            };
        }
    }

    fn push_trailer(&mut self, b: u8) -> Result<(), Error> {
        if self.trailers.len() >= TRAILERS_LIMIT {
            return Err(bad("trailers too large"));
        }
        self.trailers.push(b);
        Ok(())
    }

    fn take_trailers(&mut self) -> Result<HeaderMap, Error> {
        self.trailers.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
        let parsed = match httparse::parse_headers(&self.trailers, &mut fields) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            _ => return Err(bad("a malformed trailer section")),
        };
        let mut map = HeaderMap::with_capacity(parsed.len());
        for f in parsed {
            let name = http::HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Error::HeaderName)?;
            let value = http::HeaderValue::from_bytes(f.value).map_err(|_| Error::HeaderValue)?;
            map.append(name, value);
        }
        Ok(map)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's bytes, its trailers, and what is left in the buffer after it.
    type Decoding = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode(input: &[u8], step: usize) -> Result<Decoding, Error> {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((body, trailers, buf.to_vec())),
                Decoded::NeedMore if fed == input.len() => return Err(Error::IncompleteBody),
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunks_are_decoded_whatever_the_read_boundaries() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA  \r\n0123456789\r\n0\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, trailers, rest) = decode(input, step).expect("decodes");
            assert_eq!(body, b"hello 0123456789");
            assert!(trailers.is_none());
            assert!(b"NEXT".starts_with(&rest), "only what follows the body is left");
        }
    }

    #[test]
    fn trailers_come_out_as_a_header_map() {
        let (body, trailers, _) = decode(b"2\r\nok\r\n0\r\ngrpc-status: 0\r\nx-b: 1\r\n\r\n", 3).expect("decodes");
        assert_eq!(body, b"ok");
        let t = trailers.expect("trailers");
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-b"], "1");
    }

    #[test]
    fn smuggling_shapes_and_overflows_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5 5\r\nhello\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nbad field\r\n\r\n",
            b"0\r\n\r\r",
        ] {
            assert!(decode(bad, 64).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_body_cut_short_needs_more() {
        assert!(matches!(decode(b"5\r\nhel", 64), Err(Error::IncompleteBody)));
        assert!(matches!(decode(b"0\r\n", 64), Err(Error::IncompleteBody)));
    }
}
