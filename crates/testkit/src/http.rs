//! Minimal HTTP/1.1 and Server-Sent Events clients (admin endpoints, webhooks, boards).

use crate::*;

/// A minimal HTTP/1.1 GET (admin endpoints); returns status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    read_response(stream).await
}

/// Read a `Connection: close` HTTP/1.1 response to the end: its status
/// and its body.
pub(crate) async fn read_response(
    mut stream: tokio::net::TcpStream,
) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A minimal HTTP/1.1 GET with extra headers; returns status and body.
pub async fn http_get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    read_response(stream).await
}

/// A Server-Sent Events client: connects, waits for the response headers,
/// then yields each event's `data:` line.
pub struct SseReader {
    stream: tokio::net::TcpStream,
    buf: String,
}

impl SseReader {
    pub async fn connect(addr: std::net::SocketAddr, path: &str) -> SseReader {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect SSE");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("send SSE request");
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        while !buf.contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("SSE headers within 10 s")
                .expect("read SSE");
            assert!(n > 0, "SSE connection closed before headers");
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        let (head, rest) = buf.split_once("\r\n\r\n").expect("headers");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        let rest = rest.to_owned();
        SseReader { stream, buf: rest }
    }

    /// The next event's data (JSON), skipping keep-alive comments.
    pub async fn next_data(&mut self, timeout: Duration) -> serde_json::Value {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Chunked transfer: data lines are found anywhere in the buffer.
            if let Some(pos) = self.buf.find("data: ") {
                let after = &self.buf[pos + 6..];
                if let Some(end) = after.find('\n') {
                    let line = after[..end].trim().to_owned();
                    self.buf = after[end..].to_owned();
                    return serde_json::from_str(&line).expect("SSE data is JSON");
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("SSE event in time")
                .expect("read SSE");
            assert!(n > 0, "SSE connection closed");
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}
