//! The environment as a configuration source: `GUNICORN_CMD_ARGS` (flags),
//! `WEB_CONCURRENCY`, `PORT`, `FORWARDED_ALLOW_IPS`, and uWSGI's
//! `UWSGI_<OPTION>` variables. They rank above files and below the
//! command line.

use super::cli;
use super::layer::{Layer, Rank, Source};
use super::settings;
use super::ConfigError;

/// Variables uWSGI sets for itself (re-exec, emperor): never options.
const UWSGI_OWN: &[&str] = &["RELOADS", "ORIGINAL_PROC_NAME", "NODE", "VASSAL_CONFIG"];

/// Reads the environment (`vars`: name/value pairs, as `std::env::vars()`).
///
/// # Errors
/// A `GUNICORN_CMD_ARGS` that does not parse.
pub fn read(vars: &[(String, String)]) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = Vec::new();
    let mut simple = Layer::new(Rank::Env);
    let get = |name: &str| {
        vars.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    if let Some(count) = get("WEB_CONCURRENCY").filter(|value| !value.trim().is_empty()) {
        let setting = settings::by_name("workers").expect("in the table");
        simple.push(setting, count.trim(), Source::Env("WEB_CONCURRENCY".into()));
    }
    if let Some(port) = get("PORT").filter(|value| !value.trim().is_empty()) {
        // gunicorn: $PORT means every interface on that port.
        let setting = settings::by_name("bind").expect("in the table");
        simple.push(
            setting,
            format!("0.0.0.0:{}", port.trim()),
            Source::Env("PORT".into()),
        );
    }
    if let Some(ips) = get("FORWARDED_ALLOW_IPS") {
        let setting = settings::by_name("forwarded_allow_ips").expect("in the table");
        simple.push(setting, ips, Source::Env("FORWARDED_ALLOW_IPS".into()));
    }
    for (name, value) in vars {
        let Some(option) = name.strip_prefix("UWSGI_") else {
            continue;
        };
        if UWSGI_OWN.contains(&option) || option.starts_with("VASSAL_") {
            continue;
        }
        let key = option.to_ascii_lowercase().replace('_', "-");
        let source = Source::Env(name.clone());
        match settings::by_uwsgi(&key) {
            Some(setting) => {
                simple.push(setting, value.clone(), source);
            }
            None => simple.unknown.push(source),
        }
    }
    layers.push(simple);
    if let Some(args) = get("GUNICORN_CMD_ARGS") {
        // After the simple variables, so that its flags win over them.
        layers.push(cli::parse_env_args("GUNICORN_CMD_ARGS", args)?);
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layer::Merged;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn variables() {
        let layers = read(&env(&[
            ("WEB_CONCURRENCY", "3"),
            ("PORT", "5000"),
            ("UWSGI_SOCKET", "/tmp/x.sock"),
            ("UWSGI_RELOADS", "0"),
            ("UWSGI_NO_SUCH", "1"),
            ("GUNICORN_CMD_ARGS", "--workers 7"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        let merged = Merged::new(layers);
        let workers = merged.value("workers").unwrap();
        assert_eq!(workers.value, "7");
        assert_eq!(workers.source.to_string(), "GUNICORN_CMD_ARGS --workers");
        assert_eq!(merged.value("bind").unwrap().value, "0.0.0.0:5000");
        assert_eq!(
            merged.value("socket").unwrap().source.to_string(),
            "UWSGI_SOCKET"
        );
        assert_eq!(merged.layers()[0].unknown.len(), 1);
    }
}
