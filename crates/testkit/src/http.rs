//! Bare HTTP/1.1 and form helpers for the tests' small fake servers (a gateway, a
//! provider): read one request off a socket, write one answer, and encode or decode the
//! URL and form values they carry.

#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as a fake server got it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// The first header of that name, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The form body, every pair decoded, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_fields(&self.body)
    }

    /// The one value of `name` in the form body; panics unless it is there exactly once.
    pub fn field(&self, name: &str) -> String {
        let form = self.form();
        let values: Vec<&String> = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
        assert_eq!(values.len(), 1, "{name} in {form:?}");
        values[0].clone()
    }
}

/// Reads one HTTP/1.1 request: the head, then `Content-Length` bytes of body. `None` once
/// the peer closed the connection, or on a request that is not HTTP/1.1 as UTF-8.
pub async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let method = start.next()?.to_owned();
    let target = start.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// Writes one answer. With `close`, it says `Connection: close` and then shuts the
/// connection down; without, the connection stays open for the next request.
pub async fn respond(
    socket: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        _ => "Other",
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    );
    socket.write_all(answer.as_bytes()).await?;
    socket.flush().await?;
    if close {
        socket.shutdown().await?;
    }
    Ok(())
}

/// `+` is a space, `%XX` a byte (a `%` without two characters after it stays as it is).
pub fn url_decode(data: &str) -> Vec<u8> {
    let raw = data.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' if i + 2 < raw.len() => {
                bytes.push(u8::from_str_radix(std::str::from_utf8(&raw[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    bytes
}

/// `a=1&b=x+y` as decoded pairs, in order (`+` is a space, `%XX` a byte).
pub fn form_fields(text: &str) -> Vec<(String, String)> {
    let decode = |value: &str| String::from_utf8(url_decode(value)).unwrap();
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A value for a URL: every byte but RFC 3986's unreserved ones as `%XX`.
pub fn url_encode(value: &str) -> String {
    escape(value, false)
}

/// As an HTML form encodes a value (what Jasmin's `urlencode` does): a space is `+`, every
/// byte but `A-Z a-z 0-9 - . _` is `%XX`.
pub fn form_encode(value: &str) -> String {
    escape(value, true)
}

fn escape(value: &str, form: bool) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') || (!form && b == b'~') {
            out.push(char::from(b));
        } else if form && b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        let value = "Zq%C3+/&x=1 ~Lạng Sơn ?%d";
        assert_eq!(url_decode(&form_encode(value)), value.as_bytes());
        assert_eq!(url_decode(&url_encode(value)), value.as_bytes());
        assert_eq!(url_encode("a b~"), "a%20b~");
        assert_eq!(form_encode("a b~"), "a+b%7E");
        assert_eq!(
            form_fields(&format!("k={}&&e", form_encode("x=y & z"))),
            [
                ("k".to_owned(), "x=y & z".to_owned()),
                ("e".to_owned(), String::new())
            ]
        );
    }
}
