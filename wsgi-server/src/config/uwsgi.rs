//! uWSGI configuration files: `--ini FILE[:section]` and `--json
//! FILE[:section]`, with uWSGI's semantics: the `[uwsgi]` section by
//! default, a bare key means true, repeated keys accumulate, placeholders
//! (`%d`, `%n`, `%p`, `%(key)`, `set-placeholder`), `$(ENV)`, and `ini =` /
//! `json =` includes. Unknown uWSGI options are collected for one warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::json::{self, Json};
use super::layer::{Layer, Rank, Source};
use super::settings;
use super::ConfigError;

/// The section of our own options in an ini file (`--ini FILE:wsgi-server`).
pub const OWN_SECTION: &str = "wsgi-server";

/// Includes deeper than this are a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Which reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `--ini`.
    Ini,
    /// `--json`.
    Json,
    /// The `[uwsgi]` section of a PasteDeploy ini (`--ini-paste`): its
    /// `%(here)s`-style references are read as uWSGI's `%(here)`.
    PasteIni,
}

/// Reads `spec` (`FILE` or `FILE:section`) into a file-rank layer.
///
/// # Errors
/// One line naming the file (and line), the key and the problem.
pub fn read(spec: &str, format: Format) -> Result<Layer, ConfigError> {
    let mut reader = Reader {
        layer: Layer::new(Rank::File),
        placeholders: HashMap::new(),
        depth: 0,
    };
    reader.read(spec, format, None)?;
    Ok(reader.layer)
}

/// Splits `FILE:section` (a colon after the last `/` that is not a drive
/// of the path's own; `FILE` alone has no section).
fn split_spec(spec: &str) -> (&str, Option<&str>) {
    let tail_start = spec.rfind('/').map_or(0, |at| at + 1);
    match spec[tail_start..].rfind(':') {
        Some(colon) if tail_start + colon + 1 < spec.len() => {
            let at = tail_start + colon;
            (&spec[..at], Some(&spec[at + 1..]))
        }
        _ => (spec, None),
    }
}

struct Reader {
    layer: Layer,
    /// `%(name)`: options seen so far and `set-placeholder` values.
    placeholders: HashMap<String, String>,
    depth: usize,
}

/// A key/value as found in a file, before expansion.
struct RawOption {
    key: String,
    value: String,
    line: u32,
}

impl Reader {
    fn read(
        &mut self,
        spec: &str,
        format: Format,
        parent: Option<&Source>,
    ) -> Result<(), ConfigError> {
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(ConfigError::new(format!(
                "{}: includes nest deeper than {MAX_INCLUDE_DEPTH} files (a loop?)",
                parent.map_or_else(|| spec.to_owned(), ToString::to_string)
            )));
        }
        let (file, section) = split_spec(spec);
        let section = section.unwrap_or("uwsgi");
        let path = Arc::<str>::from(file);
        let text = std::fs::read_to_string(file).map_err(|error| {
            let what = match parent {
                Some(parent) => format!("{parent}: {file}"),
                None => file.to_owned(),
            };
            ConfigError::new(format!("{what}: cannot read: {}", plain_io_error(&error)))
        })?;
        let options = match format {
            Format::Ini | Format::PasteIni => ini_section(&path, &text, section)?,
            Format::Json => json_section(&path, &text, section)?,
        };
        // `[wsgi-server]` is our own namespace: every option of ours is a
        // key there, and an unknown key is an error, not a peer's option.
        let own = section == OWN_SECTION;
        let absolute = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
        let magic = Magic::new(&absolute);
        self.depth += 1;
        for option in options {
            let source = Source::File {
                path: path.clone(),
                line: Some(option.line),
                key: option.key.clone(),
            };
            let value = self.expand(&option.value, &magic, format, &source)?;
            let key = option.key.replace('_', "-");
            match key.as_str() {
                "set-placeholder" | "set-ph" => {
                    let Some((name, value)) = value.split_once('=') else {
                        return Err(ConfigError::new(format!(
                            "{source}: expected NAME=VALUE, got {value:?}"
                        )));
                    };
                    self.placeholders
                        .insert(name.trim().to_owned(), value.trim().to_owned());
                    continue;
                }
                "ini" | "json" => {
                    // An include: relative to the working directory, as uWSGI.
                    let format = if key == "ini" {
                        Format::Ini
                    } else {
                        Format::Json
                    };
                    self.read(&value, format, Some(&source))?;
                    continue;
                }
                _ => {}
            }
            self.placeholders.insert(key.clone(), value.clone());
            let found = if own {
                settings::by_flag(&key)
                    .filter(|found| !found.negated)
                    .map(|found| found.setting)
            } else {
                settings::by_uwsgi(&key)
            };
            if own && found.is_none() {
                let hint = settings::closest(&key, settings::all_flags())
                    .map(|near| format!(" (did you mean {near}?)"))
                    .unwrap_or_default();
                return Err(ConfigError::new(format!("{source}: unknown option{hint}")));
            }
            match found {
                Some(setting) => {
                    if let settings::Kind::Ignored { .. } = setting.kind {
                        self.layer.ignored.push(source.clone());
                    }
                    self.layer.push(setting, value, source);
                }
                None => self.layer.unknown.push(source),
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// uWSGI's expansion: `%x` magic variables, `%(name)`, `$(ENV)`.
    fn expand(
        &self,
        value: &str,
        magic: &Magic,
        format: Format,
        source: &Source,
    ) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find(['%', '$']) {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(inner) = tail.strip_prefix("$(") {
                let Some(end) = inner.find(')') else {
                    return Err(ConfigError::new(format!(
                        "{source}: unclosed $( in {value:?}"
                    )));
                };
                out.push_str(&std::env::var(&inner[..end]).unwrap_or_default());
                rest = &inner[end + 1..];
            } else if let Some(inner) = tail.strip_prefix("%(") {
                let Some(end) = inner.find(')') else {
                    return Err(ConfigError::new(format!(
                        "{source}: unclosed %( in {value:?}"
                    )));
                };
                let name = &inner[..end];
                let found = self
                    .placeholders
                    .get(name)
                    .cloned()
                    .or_else(|| (name == "here").then(|| magic.dir_plain.clone()))
                    .or_else(|| (name == "__file__").then(|| magic.path.clone()));
                let Some(found) = found else {
                    return Err(ConfigError::new(format!(
                        "{source}: unknown placeholder %({name}) in {value:?}"
                    )));
                };
                out.push_str(&found);
                rest = &inner[end + 1..];
                if format == Format::PasteIni {
                    // ConfigParser's `%(here)s`: the `s` is its conversion.
                    rest = rest.strip_prefix('s').unwrap_or(rest);
                }
            } else if tail.starts_with('%') && tail.len() >= 2 {
                let letter = tail[1..].chars().next().expect("len checked");
                match magic.get(letter) {
                    Some(text) => out.push_str(&text),
                    None => {
                        out.push('%');
                        out.push(letter);
                    }
                }
                rest = &tail[1 + letter.len_utf8()..];
            } else {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// uWSGI's magic variables for one file.
struct Magic {
    /// `%d`: the file's directory, with a trailing slash.
    dir: String,
    /// The same without the slash (`%(here)`).
    dir_plain: String,
    /// `%p`: the file's absolute path.
    path: String,
}

impl Magic {
    fn new(absolute: &Path) -> Magic {
        let dir = absolute
            .parent()
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or_default();
        Magic {
            dir: format!("{}/", dir.trim_end_matches('/')),
            dir_plain: dir,
            path: absolute.to_string_lossy().into_owned(),
        }
    }

    fn get(&self, letter: char) -> Option<String> {
        let path = Path::new(&self.path);
        let file_name = || {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        };
        Some(match letter {
            'd' => self.dir.clone(),
            'p' => self.path.clone(),
            's' => file_name().unwrap_or_default(),
            'n' => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'e' => path
                .extension()
                .map(|ext| ext.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'c' => Path::new(&self.dir_plain)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            'x' => file_name().unwrap_or_default(),
            'h' => hostname(),
            'k' => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .to_string(),
            // SAFETY: getuid/getgid cannot fail.
            'u' => unsafe { libc::getuid() }.to_string(),
            // SAFETY: as above.
            'g' => unsafe { libc::getgid() }.to_string(),
            'U' => std::env::var("USER").unwrap_or_default(),
            '%' => "%".to_owned(),
            _ => return None,
        })
    }
}

fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return String::new();
    }
    let end = buffer
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// An `io::Error` without Rust's "(os error 2)" suffix.
pub(super) fn plain_io_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The options of `[section]` in an ini text.
fn ini_section(path: &str, text: &str, wanted: &str) -> Result<Vec<RawOption>, ConfigError> {
    let mut options = Vec::new();
    let mut current: Option<&str> = None;
    let mut sections = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_number = u32::try_from(number + 1).unwrap_or(u32::MAX);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let Some(name) = name.strip_suffix(']') else {
                return Err(ConfigError::new(format!(
                    "{path}:{line_number}: section header {line:?} lacks its closing ]"
                )));
            };
            let name = name.trim();
            sections.push(name);
            current = Some(name);
            continue;
        }
        if current != Some(wanted) {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), value.trim()),
            // uWSGI: a bare key is a switch turned on.
            None => (line, "true"),
        };
        if key.is_empty() {
            return Err(ConfigError::new(format!(
                "{path}:{line_number}: a value without a key: {line:?}"
            )));
        }
        options.push(RawOption {
            key: key.to_owned(),
            value: value.to_owned(),
            line: line_number,
        });
    }
    if !sections.contains(&wanted) {
        return Err(ConfigError::new(format!(
            "{path}: no [{wanted}] section{}",
            listed("sections", &sections)
        )));
    }
    Ok(options)
}

fn listed(what: &str, names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (its {what}: {})", names.join(", "))
    }
}

/// The options of `"section": {...}` in a JSON text.
fn json_section(path: &str, text: &str, wanted: &str) -> Result<Vec<RawOption>, ConfigError> {
    let document = json::parse(text).map_err(|error| {
        ConfigError::new(format!(
            "{path}:{}:{}: invalid JSON: {}",
            error.line, error.column, error.message
        ))
    })?;
    let Json::Object(top) = &document.value else {
        return Err(ConfigError::new(format!(
            "{path}:{}: expected an object with a \"{wanted}\" key",
            document.line
        )));
    };
    let Some((_, section)) = top.iter().rev().find(|(key, _)| key.value == wanted) else {
        let names: Vec<&str> = top.iter().map(|(key, _)| key.value.as_str()).collect();
        return Err(ConfigError::new(format!(
            "{path}: no \"{wanted}\" object{}",
            listed("keys", &names)
        )));
    };
    let Json::Object(members) = &section.value else {
        return Err(ConfigError::new(format!(
            "{path}:{}: \"{wanted}\" must be an object",
            section.line
        )));
    };
    let mut options = Vec::new();
    for (key, value) in members {
        let values: Vec<&json::Node> = match &value.value {
            Json::Array(items) => items.iter().collect(),
            _ => vec![value],
        };
        for item in values {
            let text = match &item.value {
                Json::String(text) | Json::Number(text) => text.clone(),
                Json::Bool(flag) => flag.to_string(),
                Json::Null => continue,
                Json::Array(_) | Json::Object(_) => {
                    return Err(ConfigError::new(format!(
                        "{path}:{}: {}: expected a string, number, boolean or a list of them",
                        item.line, key.value
                    )))
                }
            };
            options.push(RawOption {
                key: key.value.clone(),
                value: text,
                line: key.line,
            });
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempdir::Dir, String) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        let path = path.to_string_lossy().into_owned();
        (dir, path)
    }

    mod tempdir {
        /// A directory removed on drop.
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "wsgi-config-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn values(layer: &Layer, name: &str) -> Vec<String> {
        layer.all(name).map(|entry| entry.value.clone()).collect()
    }

    #[test]
    fn ini_semantics() {
        let (dir, path) = write(
            "app.ini",
            "# comment\n[other]\nprocesses = 9\n[uwsgi]\nmaster\nprocesses = 5\nsocket = 127.0.0.1:1\n\
             socket = 127.0.0.1:2\nchdir = %d\nset-placeholder = base=/srv\npythonpath = %(base)/lib\n\
             logto = %(chdir)%n.log\nenv = HOME_IS=$(HOME)\nenable-threads\nfrobnicate = 1\n",
        );
        let layer = read(&path, Format::Ini).unwrap();
        let dir_text = format!("{}/", dir.path.display());
        assert_eq!(values(&layer, "master"), ["true"]);
        assert_eq!(values(&layer, "workers"), ["5"]);
        assert_eq!(values(&layer, "socket"), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(values(&layer, "chdir"), std::slice::from_ref(&dir_text));
        assert_eq!(values(&layer, "pythonpath"), ["/srv/lib"]);
        assert_eq!(values(&layer, "errorlog"), [format!("{dir_text}app.log")]);
        assert_eq!(
            values(&layer, "raw_env"),
            [format!(
                "HOME_IS={}",
                std::env::var("HOME").unwrap_or_default()
            )]
        );
        assert_eq!(layer.unknown.len(), 1);
        assert_eq!(
            layer.unknown[0].to_string(),
            format!("{path}:15: frobnicate")
        );
        assert_eq!(layer.ignored.len(), 1);
        let source = layer.last("workers").unwrap().source.to_string();
        assert_eq!(source, format!("{path}:6: processes"));
    }

    #[test]
    fn sections_and_errors() {
        let (_dir, path) = write("a.ini", "[uwsgi]\nprocesses = 1\n[prod]\nprocesses = 7\n");
        let layer = read(&format!("{path}:prod"), Format::Ini).unwrap();
        assert_eq!(values(&layer, "workers"), ["7"]);
        let error = read(&format!("{path}:nope"), Format::Ini)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("{path}: no [nope] section (its sections: uwsgi, prod)")
        );
        let error = read("/no/such.ini", Format::Ini).unwrap_err().to_string();
        assert_eq!(
            error,
            "/no/such.ini: cannot read: No such file or directory"
        );
        let (_dir, path) = write("b.ini", "[uwsgi]\nx = %(nothing)\n");
        assert!(read(&path, Format::Ini)
            .unwrap_err()
            .to_string()
            .contains(":2: x: unknown placeholder"));
    }

    #[test]
    fn json_semantics() {
        let (_dir, path) = write(
            "app.json",
            "{\n  \"uwsgi\": {\n    \"socket\": [\":1\", \":2\"],\n    \"master\": true,\n    \"processes\": 5,\n    \"module\": \"wsgi:application\"\n  }\n}\n",
        );
        let layer = read(&path, Format::Json).unwrap();
        assert_eq!(values(&layer, "socket"), [":1", ":2"]);
        assert_eq!(values(&layer, "master"), ["true"]);
        assert_eq!(values(&layer, "workers"), ["5"]);
        assert_eq!(
            layer.last("workers").unwrap().source.to_string(),
            format!("{path}:5: processes")
        );
        let (_dir, path) = write(
            "bad.json",
            "{\n  \"uwsgi\": {\n    \"master\": tru\n  }\n}\n",
        );
        let error = read(&path, Format::Json).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{path}:3:15: invalid JSON")),
            "{error}"
        );
    }

    #[test]
    fn includes_and_paste_here() {
        let (dir, inner) = write("inner.ini", "[uwsgi]\nthreads = 3\n");
        let outer = dir.path.join("outer.ini");
        std::fs::write(&outer, format!("[uwsgi]\nini = {inner}\nprocesses = 2\n")).unwrap();
        let layer = read(&outer.to_string_lossy(), Format::Ini).unwrap();
        assert_eq!(values(&layer, "threads"), ["3"]);
        assert_eq!(values(&layer, "workers"), ["2"]);
        let paste = dir.path.join("prod.ini");
        std::fs::write(&paste, "[uwsgi]\nchdir = %(here)s/app\n").unwrap();
        let layer = read(&paste.to_string_lossy(), Format::PasteIni).unwrap();
        assert_eq!(
            values(&layer, "chdir"),
            [format!("{}/app", dir.path.display())]
        );
        let looping = dir.path.join("loop.ini");
        std::fs::write(&looping, format!("[uwsgi]\nini = {}\n", looping.display())).unwrap();
        assert!(read(&looping.to_string_lossy(), Format::Ini)
            .unwrap_err()
            .to_string()
            .contains("a loop"));
    }

    #[test]
    fn own_section_refuses_unknown_keys() {
        let (_dir, path) = write(
            "own.ini",
            "[wsgi-server]\nworkers = 3\naccess-logfile = -\nwokers = 2\n",
        );
        let error = read(&format!("{path}:wsgi-server"), Format::Ini)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("{path}:4: wokers: unknown option (did you mean workers?)")
        );
        let (_dir, path) = write("own2.ini", "[wsgi-server]\nworkers = 3\nrust-app = hello\n");
        let layer = read(&format!("{path}:wsgi-server"), Format::Ini).unwrap();
        assert_eq!(values(&layer, "workers"), ["3"]);
        assert_eq!(values(&layer, "rust_app"), ["hello"]);
    }

    #[test]
    fn spec_split() {
        assert_eq!(split_spec("a.ini"), ("a.ini", None));
        assert_eq!(split_spec("a.ini:prod"), ("a.ini", Some("prod")));
        assert_eq!(split_spec("/x:y/a.ini"), ("/x:y/a.ini", None));
        assert_eq!(split_spec("a.ini:"), ("a.ini:", None));
    }
}
