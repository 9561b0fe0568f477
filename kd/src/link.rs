//! The byte streams KDCOM travels on: serial ports (tokio-serial), TCP, unix sockets and
//! Windows named pipes, all behind one [`Link`].

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;
use thiserror::Error;

/// Why a link could not be used.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The other end went away (EOF, broken pipe, reset connection).
    #[error("the link closed: {0}")]
    Closed(String),
    #[error("could not open {what}: {source}")]
    Open {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("I/O error on the link: {0}")]
    Io(#[from] io::Error),
}

/// A bidirectional byte stream with read timeouts.
pub trait Link: Send {
    /// Read what is available, waiting at most `timeout` for the first byte. `Ok(0)` means
    /// nothing arrived in time; a closed link is [`LinkError::Closed`].
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LinkError>;

    /// Write all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError>;

    /// Drop input that is buffered but not yet read (stale bytes on a pipe after a reset).
    fn discard_input(&mut self) -> Result<(), LinkError> {
        let mut scratch = [0u8; 4096];
        while self.read(&mut scratch, Duration::ZERO)? > 0 {}
        Ok(())
    }
}

fn closed_or_io(e: io::Error) -> LinkError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected => LinkError::Closed(e.to_string()),
        _ => LinkError::Io(e),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A socket whose reads can time out: TCP and unix streams.
pub trait TimedStream: Read + Write + Send {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
}

impl TimedStream for std::net::TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, on)
    }
}

#[cfg(unix)]
impl TimedStream for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_nonblocking(self, on)
    }
}

/// A TCP or unix socket as a link.
pub struct SocketLink<S: TimedStream> {
    stream: S,
}

impl<S: TimedStream> SocketLink<S> {
    pub fn new(stream: S) -> SocketLink<S> {
        SocketLink { stream }
    }
}

impl<S: TimedStream> Link for SocketLink<S> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LinkError> {
        let result = if timeout.is_zero() {
            self.stream.set_nonblocking(true)?;
            let r = self.stream.read(buf);
            self.stream.set_nonblocking(false)?;
            r
        } else {
            self.stream.set_read_timeout(Some(timeout))?;
            self.stream.read(buf)
        };
        match result {
            Ok(0) => Err(LinkError::Closed("end of stream".into())),
            Ok(n) => Ok(n),
            Err(e) if is_timeout(&e) => Ok(0),
            Err(e) => Err(closed_or_io(e)),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.stream.write_all(bytes).map_err(closed_or_io)?;
        self.stream.flush().map_err(closed_or_io)
    }
}

/// A serial port (or a pty) at 8N1, through tokio-serial.
pub struct SerialLink {
    port: Box<dyn tokio_serial::SerialPort>,
}

impl SerialLink {
    /// Open `path` (COM1, /dev/ttyS0, a pty) at `baud`, 8 data bits, no parity, one stop bit.
    pub fn open(path: &str, baud: u32) -> Result<SerialLink, LinkError> {
        let port = tokio_serial::new(path, baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None)
            .timeout(Duration::from_millis(100))
            .open()
            .map_err(|e| LinkError::Open {
                what: format!("serial port {path}"),
                source: io::Error::other(e.to_string()),
            })?;
        Ok(SerialLink { port })
    }
}

impl Link for SerialLink {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LinkError> {
        if timeout.is_zero() {
            let ready = self
                .port
                .bytes_to_read()
                .map_err(|e| LinkError::Io(io::Error::other(e.to_string())))?;
            if ready == 0 {
                return Ok(0);
            }
        }
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(|e| LinkError::Io(io::Error::other(e.to_string())))?;
        match self.port.read(buf) {
            Ok(0) => Ok(0),
            Ok(n) => Ok(n),
            Err(e) if is_timeout(&e) => Ok(0),
            Err(e) => Err(closed_or_io(e)),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.port.write_all(bytes).map_err(closed_or_io)?;
        self.port.flush().map_err(closed_or_io)
    }

    fn discard_input(&mut self) -> Result<(), LinkError> {
        self.port
            .clear(tokio_serial::ClearBuffer::Input)
            .map_err(|e| LinkError::Io(io::Error::other(e.to_string())))
    }
}

/// Any blocking reader/writer pair as a link: a thread reads and hands chunks over, so reads
/// can time out even where the handle cannot (Windows named pipes, FIFOs).
pub struct ThreadedLink<W: Write + Send> {
    chunks: Receiver<io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    writer: W,
}

impl<W: Write + Send> ThreadedLink<W> {
    pub fn new<R: Read + Send + 'static>(mut reader: R, writer: W) -> ThreadedLink<W> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let chunk = match reader.read(&mut buf) {
                    Ok(0) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let end = chunk.is_err();
                if tx.send(chunk).is_err() || end {
                    return;
                }
            }
        });
        ThreadedLink {
            chunks: rx,
            pending: Vec::new(),
            writer,
        }
    }
}

impl<W: Write + Send> Link for ThreadedLink<W> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LinkError> {
        if self.pending.is_empty() {
            let chunk = match self.chunks.recv_timeout(timeout) {
                Ok(chunk) => chunk,
                Err(RecvTimeoutError::Timeout) => return Ok(0),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LinkError::Closed("reader ended".into()))
                }
            };
            self.pending = chunk.map_err(closed_or_io)?;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.writer.write_all(bytes).map_err(closed_or_io)?;
        self.writer.flush().map_err(closed_or_io)
    }

    fn discard_input(&mut self) -> Result<(), LinkError> {
        self.pending.clear();
        while let Ok(chunk) = self.chunks.try_recv() {
            chunk.map_err(closed_or_io)?;
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn socket_link_times_out_then_reads_then_sees_close() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut link = SocketLink::new(a);
        let mut buf = [0u8; 8];
        assert_eq!(link.read(&mut buf, Duration::from_millis(10)).unwrap(), 0);
        (&b).write_all(b"abc").unwrap();
        assert_eq!(link.read(&mut buf, Duration::from_millis(500)).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        drop(b);
        assert!(matches!(
            link.read(&mut buf, Duration::from_millis(500)),
            Err(LinkError::Closed(_))
        ));
    }

    #[test]
    fn threaded_link_over_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut link = ThreadedLink::new(a.try_clone().unwrap(), a);
        let mut buf = [0u8; 2];
        assert_eq!(link.read(&mut buf, Duration::from_millis(10)).unwrap(), 0);
        (&b).write_all(b"xyz").unwrap();
        assert_eq!(link.read(&mut buf, Duration::from_millis(500)).unwrap(), 2);
        assert_eq!(link.read(&mut buf, Duration::from_millis(500)).unwrap(), 1);
        assert_eq!(buf[0], b'z');
        link.write_all(b"ok").unwrap();
        let mut got = [0u8; 2];
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }
}
