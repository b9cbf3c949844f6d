//! Partial configurations: what one source (the command line, the
//! environment, one file) says, each value remembering where it came from,
//! and the merge of all of them by precedence.

use std::fmt;
use std::sync::Arc;

use super::settings::{Kind, Setting};

/// Where a value came from, for `--print-config` and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A command-line flag, as typed (`--workers`, `-w`, `APP`).
    Flag(String),
    /// An environment variable (`WEB_CONCURRENCY`), or a flag inside one
    /// (`GUNICORN_CMD_ARGS --workers`).
    Env(String),
    /// A key in a file, with its line when known.
    File {
        /// The file as named by the user.
        path: Arc<str>,
        /// 1-based line.
        line: Option<u32>,
        /// The key as written.
        key: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => formatter.write_str("default"),
            Source::Flag(flag) => formatter.write_str(flag),
            Source::Env(name) => formatter.write_str(name),
            Source::File { path, line, key } => match line {
                Some(line) => write!(formatter, "{path}:{line}: {key}"),
                None => write!(formatter, "{path}: {key}"),
            },
        }
    }
}

/// Precedence of a layer, lowest first (the derive orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// A PasteDeploy `[server:NAME]` section.
    PasteServer,
    /// A uWSGI ini/json file or `gunicorn.conf.py`.
    File,
    /// Environment variables.
    Env,
    /// The command line.
    CommandLine,
}

/// One value of one setting.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The setting.
    pub setting: &'static Setting,
    /// The value as text (booleans `true`/`false`).
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// What one source says.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Its precedence.
    pub rank: Rank,
    /// Its values, in the order given.
    pub entries: Vec<Entry>,
    /// Options this source gave that we do not know (a copied uWSGI file
    /// carries many): one warning line lists them.
    pub unknown: Vec<Source>,
    /// Options of the peers we accept without effect: one info line.
    pub ignored: Vec<Source>,
}

impl Layer {
    /// An empty layer.
    pub fn new(rank: Rank) -> Layer {
        Layer {
            rank,
            entries: Vec::new(),
            unknown: Vec::new(),
            ignored: Vec::new(),
        }
    }

    /// Adds a value.
    pub fn push(&mut self, setting: &'static Setting, value: impl Into<String>, source: Source) {
        self.entries.push(Entry {
            setting,
            value: value.into(),
            source,
        });
    }

    /// The last value this layer gives `name` (files name their includes
    /// and the command line its files through settings too).
    pub fn last(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.setting.name == name)
    }

    /// Every value this layer gives `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |entry| entry.setting.name == name)
    }
}

/// All layers merged: for each setting, the values of the highest layer
/// that has any (all of them for a list, the last one otherwise).
#[derive(Debug, Clone, Default)]
pub struct Merged {
    layers: Vec<Layer>,
}

impl Merged {
    /// Merges `layers` (in any order; layers of one rank keep their given
    /// order, the later winning).
    pub fn new(mut layers: Vec<Layer>) -> Merged {
        layers.sort_by_key(|layer| layer.rank);
        Merged { layers }
    }

    /// The layers, lowest first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Every effective value of `name`: from the highest rank that gives
    /// any, a list's values of every layer of that rank in order (two
    /// `--ini` files' sockets add up, as in uWSGI), else the last value.
    pub fn values(&self, name: &str) -> Vec<&Entry> {
        let Some(rank) = self
            .layers
            .iter()
            .rev()
            .find(|layer| layer.entries.iter().any(|entry| entry.setting.name == name))
            .map(|layer| layer.rank)
        else {
            return Vec::new();
        };
        let mut found: Vec<&Entry> = self
            .layers
            .iter()
            .filter(|layer| layer.rank == rank)
            .flat_map(|layer| layer.entries.iter())
            .filter(|entry| entry.setting.name == name)
            .collect();
        if !matches!(found[0].setting.kind, Kind::List) {
            found.drain(..found.len() - 1);
        }
        found
    }

    /// The effective value of a single-valued setting.
    pub fn value(&self, name: &str) -> Option<&Entry> {
        self.values(name).pop()
    }
}
