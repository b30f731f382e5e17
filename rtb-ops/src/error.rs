//! The one error type of `rtb-ops`.

/// Everything that can fail in `rtb-ops` (invalid *input events* are not errors: they are
/// [`crate::schema::Invalid`] values that become dead letters).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sink (cache or database) operation failed.
    #[error("sink `{sink}` failed in `{operation}`: {reason}")]
    Sink {
        /// Which sink (`embedded-cache`, `embedded-database`, `redis`, ...).
        sink: &'static str,
        /// The operation that failed (`apply_ledger`, `add_spend_once`, ...).
        operation: &'static str,
        /// The backend's message.
        reason: String,
    },
    /// Stored sink data could not be decoded (corrupt or written by an incompatible version).
    #[error("sink `{sink}` holds undecodable data under `{key}`: {reason}")]
    SinkCorrupt {
        /// Which sink.
        sink: &'static str,
        /// The key that held it.
        key: String,
        /// The codec's message.
        reason: String,
    },
    /// A cache server lost the data of this cache (restarted empty, keys deleted): nothing more is read
    /// from or counted in it until it is rebuilt.
    #[error("sink `{sink}` lost its data: {detail}")]
    CacheLost {
        /// Which sink.
        sink: &'static str,
        /// What was found, and what to do.
        detail: String,
    },
    /// An output event could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// A time zone name is not in the IANA database.
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An error from the stream library (state stores, windows, joins).
    #[error(transparent)]
    Stream(#[from] rtb_stream::Error),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A sink failure from any displayable backend error.
    pub fn sink(sink: &'static str, operation: &'static str, e: impl std::fmt::Display) -> Self {
        Error::Sink { sink, operation, reason: e.to_string() }
    }
}

/// Operators report through `rtb_stream`'s error type; a sink failure stays a sink failure there.
impl From<Error> for rtb_stream::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Stream(inner) => inner,
            Error::Sink { sink, operation, reason } => {
                rtb_stream::Error::Sink { sink: sink.to_string(), reason: format!("{operation}: {reason}") }
            }
            Error::SinkCorrupt { sink, key, reason } => {
                rtb_stream::Error::Sink { sink: sink.to_string(), reason: format!("corrupt `{key}`: {reason}") }
            }
            Error::CacheLost { sink, detail } => {
                rtb_stream::Error::Sink { sink: sink.to_string(), reason: format!("lost its data: {detail}") }
            }
            Error::Encode { what, reason } => {
                rtb_stream::Error::Sink { sink: "output".to_string(), reason: format!("encode {what}: {reason}") }
            }
            Error::TimeZone(name) => rtb_stream::Error::Config(format!("unknown time zone `{name}`")),
            Error::Config(reason) => rtb_stream::Error::Config(reason),
        }
    }
}
