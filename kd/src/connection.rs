//! Connection strings: WinDbg's `-k com:...` forms plus `tcp:host:port` and `unix:path`.

use crate::link::{Link, LinkError, SerialLink, SocketLink};
use std::fmt;
use thiserror::Error;

/// Where the debuggee's serial line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A COM port or tty (a pty included) at a baud rate.
    Serial { port: String, baud: u32 },
    /// A Windows named pipe (`\\.\pipe\name`), as Hyper-V and VMware expose a VM's COM port.
    Pipe { path: String },
    /// A TCP serial server (QEMU `-serial tcp::PORT,server`, `com:ipport=PORT,port=IP`).
    Tcp { host: String, port: u16 },
    /// A unix socket (QEMU `-serial unix:/path,server=on`).
    Unix { path: String },
}

/// A parsed connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub endpoint: Endpoint,
    /// How many RESET packets to send while connecting (`resets=0` sends none, only break-ins).
    pub resets: Option<u32>,
    /// Reopen the link when it drops (`reconnect`).
    pub reconnect: bool,
    /// The string as given.
    pub text: String,
}

/// A connection string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionError {
    #[error("unknown transport `{0}`: expected com:..., tcp:host:port or unix:path")]
    UnknownTransport(String),
    #[error("`{option}` needs a value (`{option}=...`)")]
    MissingValue { option: String },
    #[error("unknown com option `{0}`: expected port=, baud=, pipe, ipport=, resets=, reconnect")]
    UnknownOption(String),
    #[error("`{value}` is not a valid {what}")]
    BadNumber { what: &'static str, value: String },
    #[error("com: needs port=<COMn, tty or pipe path>")]
    NoPort,
    #[error("tcp: needs host:port")]
    NoTcpPort,
    #[error("named pipes are a Windows transport; here use unix:<path>, tcp:<host>:<port> or com:port=<tty>")]
    PipeUnsupported,
}

impl Connection {
    /// Parse `com:port=COM1,baud=115200`, `com:pipe,port=\\.\pipe\name,resets=0,reconnect`,
    /// `com:ipport=PORT,port=IP`, `tcp:host:port` or `unix:path`.
    ///
    /// ```
    /// use kds_kd::connection::{Connection, Endpoint};
    /// let c = Connection::parse("com:pipe,port=\\\\.\\pipe\\w2k8com1,resets=0,reconnect").unwrap();
    /// assert_eq!(c.endpoint, Endpoint::Pipe { path: r"\\.\pipe\w2k8com1".into() });
    /// assert_eq!(c.resets, Some(0));
    /// assert!(c.reconnect);
    /// ```
    pub fn parse(text: &str) -> Result<Connection, ConnectionError> {
        let (transport, rest) = text.split_once(':').unwrap_or((text, ""));
        let mut connection = Connection {
            endpoint: Endpoint::Unix {
                path: String::new(),
            },
            resets: None,
            reconnect: false,
            text: text.to_string(),
        };
        match transport.to_ascii_lowercase().as_str() {
            "unix" => connection.endpoint = Endpoint::Unix { path: rest.into() },
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or(ConnectionError::NoTcpPort)?;
                connection.endpoint = Endpoint::Tcp {
                    host: host.into(),
                    port: number("TCP port", port)?,
                };
            }
            "com" => connection.endpoint = connection.parse_com(rest)?,
            other => return Err(ConnectionError::UnknownTransport(other.into())),
        }
        Ok(connection)
    }

    fn parse_com(&mut self, options: &str) -> Result<Endpoint, ConnectionError> {
        let mut port = None;
        let mut baud = 115_200;
        let mut pipe = false;
        let mut ipport = None;
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            let value_of = |v: &str| {
                if v.is_empty() {
                    Err(ConnectionError::MissingValue {
                        option: key.to_string(),
                    })
                } else {
                    Ok(v.to_string())
                }
            };
            match key.to_ascii_lowercase().as_str() {
                "port" => port = Some(value_of(value)?),
                "baud" => baud = number("baud rate", &value_of(value)?)?,
                "pipe" => pipe = true,
                "reconnect" => self.reconnect = true,
                "resets" => self.resets = Some(number("reset count", &value_of(value)?)?),
                "ipport" => ipport = Some(number("TCP port", &value_of(value)?)?),
                _ => return Err(ConnectionError::UnknownOption(option.into())),
            }
        }
        let port = port.ok_or(ConnectionError::NoPort)?;
        Ok(match (pipe, ipport) {
            (_, Some(tcp)) => Endpoint::Tcp {
                host: port,
                port: tcp,
            },
            (true, None) => Endpoint::Pipe { path: port },
            (false, None) => Endpoint::Serial { port, baud },
        })
    }

    /// Open the link.
    pub fn open(&self) -> Result<Box<dyn Link>, LinkError> {
        let open_err = |what: String| move |source| LinkError::Open { what, source };
        Ok(match &self.endpoint {
            Endpoint::Serial { port, baud } => Box::new(SerialLink::open(port, *baud)?),
            Endpoint::Tcp { host, port } => {
                let stream = std::net::TcpStream::connect((host.as_str(), *port))
                    .map_err(open_err(format!("tcp:{host}:{port}")))?;
                stream.set_nodelay(true)?;
                Box::new(SocketLink::new(stream))
            }
            #[cfg(unix)]
            Endpoint::Unix { path } => Box::new(SocketLink::new(
                std::os::unix::net::UnixStream::connect(path)
                    .map_err(open_err(format!("unix:{path}")))?,
            )),
            #[cfg(not(unix))]
            Endpoint::Unix { path } => {
                return Err(LinkError::Open {
                    what: format!("unix:{path}"),
                    source: std::io::Error::other("unix sockets need a unix host"),
                })
            }
            Endpoint::Pipe { path } => open_pipe(path)?,
        })
    }
}

#[cfg(windows)]
fn open_pipe(path: &str) -> Result<Box<dyn Link>, LinkError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| LinkError::Open {
            what: format!("named pipe {path}"),
            source,
        })?;
    let reader = file.try_clone()?;
    Ok(Box::new(crate::link::ThreadedLink::new(reader, file)))
}

#[cfg(not(windows))]
fn open_pipe(path: &str) -> Result<Box<dyn Link>, LinkError> {
    Err(LinkError::Open {
        what: format!("named pipe {path}"),
        source: std::io::Error::other(ConnectionError::PipeUnsupported.to_string()),
    })
}

fn number<T: std::str::FromStr>(what: &'static str, value: &str) -> Result<T, ConnectionError> {
    value.parse().map_err(|_| ConnectionError::BadNumber {
        what,
        value: value.into(),
    })
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Serial { port, baud } => write!(f, "COM port {port} at {baud} baud"),
            Endpoint::Pipe { path } => write!(f, "named pipe {path}"),
            Endpoint::Tcp { host, port } => write!(f, "TCP {host}:{port}"),
            Endpoint::Unix { path } => write!(f, "unix socket {path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windbg_com_forms() {
        let c = Connection::parse("com:port=COM1,baud=115200").unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Serial {
                port: "COM1".into(),
                baud: 115_200
            }
        );
        assert!(!c.reconnect);
        let c = Connection::parse("com:port=/dev/pts/4").unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Serial {
                port: "/dev/pts/4".into(),
                baud: 115_200
            }
        );
        let c = Connection::parse("com:ipport=50000,port=10.0.0.2").unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Tcp {
                host: "10.0.0.2".into(),
                port: 50000
            }
        );
    }

    #[test]
    fn tcp_and_unix_forms() {
        assert_eq!(
            Connection::parse("tcp:localhost:4444").unwrap().endpoint,
            Endpoint::Tcp {
                host: "localhost".into(),
                port: 4444
            }
        );
        assert_eq!(
            Connection::parse("unix:/tmp/kd.sock").unwrap().endpoint,
            Endpoint::Unix {
                path: "/tmp/kd.sock".into()
            }
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            Connection::parse("kdnet:x"),
            Err(ConnectionError::UnknownTransport("kdnet".into()))
        );
        assert_eq!(
            Connection::parse("com:baud=9600"),
            Err(ConnectionError::NoPort)
        );
        assert_eq!(
            Connection::parse("com:port=COM1,baud=fast"),
            Err(ConnectionError::BadNumber {
                what: "baud rate",
                value: "fast".into()
            })
        );
        assert_eq!(
            Connection::parse("com:port=COM1,parity=odd"),
            Err(ConnectionError::UnknownOption("parity=odd".into()))
        );
        assert_eq!(
            Connection::parse("tcp:nohost"),
            Err(ConnectionError::NoTcpPort)
        );
    }
}
