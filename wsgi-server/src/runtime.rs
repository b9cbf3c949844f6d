//! What the process model needs from a language runtime: load the
//! application, read the configuration scripts, and be told of the
//! process moments (forks, reloads, exits) that gunicorn's server hooks
//! and CPython's fork protocol hang on. [`RustRuntime`] serves the built-in
//! Rust applications; `PythonRuntime` (feature `python`) embeds CPython.

use std::sync::Arc;

use wsgi_core::Application;

use crate::config::{
    AppSource, NoScripts, PasteServerSection, PythonSettings, ScriptEntry, ScriptHost, ServerConfig,
};
use crate::master::MasterHooks;

/// Exit code when the application cannot be loaded (gunicorn's).
pub use crate::master::EXIT_APP_LOAD;

/// A language runtime behind the server. It is shared with the worker's
/// threads (a stop signal's hook runs off the I/O thread), hence `Sync`.
pub trait Runtime: ScriptHost + MasterHooks + Send + Sync {
    /// Loads the application (in a worker; in the master for `--preload`
    /// and `--check-config`). Logs why it failed and returns the exit code.
    ///
    /// # Errors
    /// The exit code to leave with (4: the application did not load).
    fn load_app(&self, config: &ServerConfig) -> Result<Arc<dyn Application>, i32>;

    /// The master is starting, before it binds (gunicorn's `on_starting`).
    fn on_starting(&self, config: &ServerConfig) {
        let _ = config;
    }

    /// In a worker, once its application is loaded (`post_worker_init`),
    /// and the place to arm stack dumps for `--timeout`.
    fn worker_ready(&self, number: usize) {
        let _ = number;
    }

    /// In a worker, on INT or QUIT (`worker_int`).
    fn worker_interrupted(&self, number: usize) {
        let _ = number;
    }

    /// In a worker about to be killed for a request past `--timeout`
    /// (`worker_abort`).
    fn worker_aborted(&self, number: usize) {
        let _ = number;
    }

    /// In a worker, as it leaves (`worker_exit`).
    fn worker_exit(&self, number: usize) {
        let _ = number;
    }

    /// Just before the process detaches (`--daemon`: it forks).
    fn before_detach(&self) {}

    /// In the detached process.
    fn after_detach(&self) {}

    /// Files whose change should restart the workers (`--reload`).
    fn source_files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// The hooks the master must call, if it needs any.
    fn master_hooks(&self) -> Option<&dyn MasterHooks>;
}

/// The built-in Rust applications (`--rust-app`): no interpreter at all.
#[derive(Debug, Default)]
pub struct RustRuntime {
    scripts: NoScripts,
}

impl ScriptHost for RustRuntime {
    fn gunicorn_config(
        &mut self,
        spec: &str,
        python: &PythonSettings,
    ) -> Result<Vec<ScriptEntry>, String> {
        self.scripts.gunicorn_config(spec, python)
    }

    fn paste_server(
        &mut self,
        path: &std::path::Path,
        name: &str,
        global_conf: &[(String, String)],
        python: &PythonSettings,
    ) -> Result<Option<PasteServerSection>, String> {
        self.scripts.paste_server(path, name, global_conf, python)
    }
}

impl MasterHooks for RustRuntime {}

impl Runtime for RustRuntime {
    fn load_app(&self, config: &ServerConfig) -> Result<Arc<dyn Application>, i32> {
        load_rust_app(config)
    }

    fn master_hooks(&self) -> Option<&dyn MasterHooks> {
        None
    }
}

/// Loads a `--rust-app`; any other source is refused (no runtime for it).
///
/// # Errors
/// The exit code: 4 if the application is not a built-in one.
pub fn load_rust_app(config: &ServerConfig) -> Result<Arc<dyn Application>, i32> {
    match &config.app {
        AppSource::Rust(name) => wsgi_core::testing::app_by_name(name).ok_or_else(|| {
            crate::log!(Error, "unknown built-in application {name:?}");
            EXIT_APP_LOAD
        }),
        other => {
            crate::log!(
                Error,
                "cannot load {other:?}: this build has no Python runtime (use --rust-app)"
            );
            Err(EXIT_APP_LOAD)
        }
    }
}
