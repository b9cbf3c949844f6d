//! A small JSON reader (RFC 8259) that remembers the line of every value,
//! so a uWSGI `--json` file's errors and settings can name their line, and
//! a syntax error its line and column.

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Node>),
    /// An object's members, in order (duplicates kept).
    Object(Vec<(Key, Node)>),
}

/// A value and the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Json,
    /// 1-based line.
    pub line: u32,
}

/// An object key and its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key.
    pub value: String,
    /// 1-based line.
    pub line: u32,
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
    /// What was wrong.
    pub message: String,
}

/// Nesting deeper than this is refused (no recursion without bound).
const MAX_DEPTH: usize = 128;

/// Parses a whole document.
///
/// # Errors
/// The first syntax error, with its position.
pub fn parse(text: &str) -> Result<Node, Error> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        column: 1,
    };
    parser.skip_space();
    let node = parser.value(0)?;
    parser.skip_space();
    if parser.at < parser.chars.len() {
        return Err(parser.error("unexpected text after the document"));
    }
    Ok(node)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    line: u32,
    column: u32,
}

impl Parser {
    fn error(&self, message: impl Into<String>) -> Error {
        Error {
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), Error> {
        if self.peek() == Some(wanted) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected '{wanted}'")))
        }
    }

    fn unexpected(&self, what: &str) -> Error {
        match self.peek() {
            Some(c) => self.error(format!("{what}, found {c:?}")),
            None => self.error(format!("{what}, found the end of the file")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let line = self.line;
        let value = match self.peek() {
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Json::String(self.string()?),
            Some('-' | '0'..='9') => Json::Number(self.number()?),
            Some('t') => self.word("true", Json::Bool(true))?,
            Some('f') => self.word("false", Json::Bool(false))?,
            Some('n') => self.word("null", Json::Null)?,
            _ => return Err(self.unexpected("expected a value")),
        };
        Ok(Node { value, line })
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, Error> {
        // A misspelt literal is reported where it starts.
        let (line, column) = (self.line, self.column);
        let matched = word.chars().all(|wanted| {
            let same = self.peek() == Some(wanted);
            if same {
                self.bump();
            }
            same
        });
        if !matched || matches!(self.peek(), Some(c) if c.is_alphanumeric()) {
            return Err(Error {
                line,
                column,
                message: "expected a value (true, false, null, a number, a \"string\", [ or {)"
                    .to_owned(),
            });
        }
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<Json, Error> {
        self.expect('{')?;
        let mut members = Vec::new();
        self.skip_space();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_space();
            if self.peek() != Some('"') {
                return Err(self.unexpected("expected a \"key\""));
            }
            let line = self.line;
            let key = self.string()?;
            self.skip_space();
            self.expect(':')?;
            self.skip_space();
            let value = self.value(depth + 1)?;
            members.push((Key { value: key, line }, value));
            self.skip_space();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.unexpected("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, Error> {
        self.expect('[')?;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(']') {
            self.bump();
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_space();
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {
                    self.bump();
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.unexpected("expected ',' or ']'")),
            }
        }
    }

    fn string(&mut self) -> Result<String, Error> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some('"') => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump();
                    let escaped = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape()?,
                        _ => return Err(self.error("invalid escape")),
                    };
                    out.push(escaped);
                }
                Some(c) if u32::from(c) < 0x20 => {
                    return Err(self.error("control character in a string"));
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.unexpected("expected a hex digit"))?;
            self.bump();
            code = code * 16 + digit;
        }
        Ok(code)
    }

    fn unicode_escape(&mut self) -> Result<char, Error> {
        let high = self.hex4()?;
        if (0xD800..0xDC00).contains(&high) {
            if self.peek() == Some('\\') {
                self.bump();
                if self.bump() == Some('u') {
                    let low = self.hex4()?;
                    if (0xDC00..0xE000).contains(&low) {
                        let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                        return char::from_u32(code)
                            .ok_or_else(|| self.error("invalid \\u escape"));
                    }
                }
            }
            return Err(self.error("unpaired surrogate in \\u escape"));
        }
        char::from_u32(high).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn number(&mut self) -> Result<String, Error> {
        let start = self.at;
        if self.peek() == Some('-') {
            self.bump();
        }
        match self.peek() {
            Some('0') => {
                self.bump();
            }
            Some('1'..='9') => {
                while matches!(self.peek(), Some('0'..='9')) {
                    self.bump();
                }
            }
            _ => return Err(self.unexpected("expected a digit")),
        }
        if self.peek() == Some('.') {
            self.bump();
            if !matches!(self.peek(), Some('0'..='9')) {
                return Err(self.unexpected("expected a digit"));
            }
            while matches!(self.peek(), Some('0'..='9')) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if !matches!(self.peek(), Some('0'..='9')) {
                return Err(self.unexpected("expected a digit"));
            }
            while matches!(self.peek(), Some('0'..='9')) {
                self.bump();
            }
        }
        Ok(self.chars[start..self.at].iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_lines() {
        let node =
            parse("{\n \"a\": [1, -2.5e3, true, null],\n \"b\": \"x\\u00e9\\n\"\n}").unwrap();
        let Json::Object(members) = node.value else {
            panic!()
        };
        assert_eq!(members[0].0.line, 2);
        assert_eq!(members[1].0.line, 3);
        assert_eq!(members[1].1.value, Json::String("xé\n".into()));
        let Json::Array(items) = &members[0].1.value else {
            panic!()
        };
        assert_eq!(items[1].value, Json::Number("-2.5e3".into()));
    }

    #[test]
    fn errors_have_positions() {
        let error = parse("{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!((error.line, error.column), (3, 7));
        assert!(error.message.contains("expected ':'"));
        assert!(parse("[1,]").is_err());
        assert!(parse("{} x").is_err());
        assert!(parse("\"\\ud800\"").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,64}") {
            let _ = parse(&text);
        }
    }
}
