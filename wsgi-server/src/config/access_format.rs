//! The access log's format as a setting: gunicorn's `%(atom)s` syntax (or
//! `json`) compiled once, so a bad format is a configuration error naming
//! its source. Rendering lines is `ops::access_log`'s.

/// gunicorn's default, Apache's combined format.
pub const COMBINED: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Atom(Atom),
}

/// gunicorn's atoms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Atom {
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesOut,
    BytesOutOrDash,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    RequestHeader(String),
    ResponseHeader(String),
    EnvVar(String),
    /// An atom gunicorn does not know either: `-`, as gunicorn prints it.
    Unknown,
}

/// How lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `%(atom)s` text, compiled.
    Text(Vec<PieceRef>),
    /// One JSON object per line with typed fields.
    Json,
}

/// A compiled piece (public for `Format`'s sake; opaque).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRef(pub(crate) Piece);

impl Format {
    /// Compiles `--access-logformat`: `json`, or gunicorn's `%(atom)s`
    /// syntax (`%%` is a percent sign).
    ///
    /// # Errors
    /// A `%(` without its closing `)s`.
    pub fn parse(text: &str) -> Result<Format, String> {
        if text.trim().eq_ignore_ascii_case("json") {
            return Ok(Format::Json);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let tail = &rest[at + 1..];
            if let Some(after) = tail.strip_prefix('%') {
                literal.push('%');
                rest = after;
                continue;
            }
            let Some(inner) = tail.strip_prefix('(') else {
                literal.push('%');
                rest = tail;
                continue;
            };
            let Some(close) = inner.find(')') else {
                return Err(format!("unclosed %( in {text:?}"));
            };
            let name = &inner[..close];
            let after = &inner[close + 1..];
            // Python's conversion letter: s (d and r read the same here).
            let after = match after.chars().next() {
                Some('s' | 'd' | 'r') => &after[1..],
                _ => return Err(format!("%({name}) must be followed by s, as in %({name})s")),
            };
            if !literal.is_empty() {
                pieces.push(PieceRef(Piece::Text(std::mem::take(&mut literal))));
            }
            pieces.push(PieceRef(Piece::Atom(atom(name))));
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(PieceRef(Piece::Text(literal)));
        }
        Ok(Format::Text(pieces))
    }

    /// Request headers the format reads (lower case), for the connection to
    /// keep in the record.
    pub fn request_headers(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut add = |name: &str| {
            if !names.iter().any(|known: &String| known == name) {
                names.push(name.to_owned());
            }
        };
        match self {
            Format::Json => {
                add("referer");
                add("user-agent");
                add("authorization");
            }
            Format::Text(pieces) => {
                for PieceRef(piece) in pieces {
                    match piece {
                        Piece::Atom(Atom::Referer) => add("referer"),
                        Piece::Atom(Atom::UserAgent) => add("user-agent"),
                        Piece::Atom(Atom::User) => add("authorization"),
                        Piece::Atom(Atom::RequestHeader(name)) => add(name),
                        _ => {}
                    }
                }
            }
        }
        names
    }

    /// Response headers the format reads (lower case).
    pub fn response_headers(&self) -> Vec<String> {
        match self {
            Format::Json => Vec::new(),
            Format::Text(pieces) => pieces
                .iter()
                .filter_map(|PieceRef(piece)| match piece {
                    Piece::Atom(Atom::ResponseHeader(name)) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        }
    }
}

fn atom(name: &str) -> Atom {
    if let Some(inner) = name.strip_prefix('{') {
        if let Some((key, kind)) = inner.rsplit_once('}') {
            let key = key.to_ascii_lowercase();
            return match kind {
                "i" => Atom::RequestHeader(key),
                "o" => Atom::ResponseHeader(key),
                "e" => Atom::EnvVar(inner[..inner.len() - 2].to_owned()),
                _ => Atom::Unknown,
            };
        }
    }
    match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "B" => Atom::BytesOut,
        "b" => Atom::BytesOutOrDash,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => Atom::Unknown,
    }
}
