//! The server's typed errors.

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A limit is out of its usable range.
    #[error("invalid limit {field} = {value}: expected {expected}")]
    InvalidLimit {
        /// The [`Limits`](crate::Limits) field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// Two routes have the same method and path.
    #[error("duplicate route {method} {path}")]
    DuplicateRoute {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// A route's path does not start with `/`.
    #[error("route path {path:?} must start with '/'")]
    InvalidPath {
        /// The path given.
        path: String,
    },
    /// The address did not resolve to any socket address.
    #[error("cannot resolve listen address {addr:?}: {source}")]
    Resolve {
        /// The address given.
        addr: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Binding failed (for example, the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not be created.
    #[error("cannot start the server thread: {0}")]
    Thread(std::io::Error),
}
