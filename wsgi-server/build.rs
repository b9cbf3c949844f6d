//! Links the binary to the libpython that wsgi-python was built against, by
//! rpath: on a machine with both a pyenv Python and the system's, the
//! dynamic loader would otherwise pick the system's libpython and run
//! another Python than the one we compiled for.

fn main() {
    if let Ok(libdir) = std::env::var("DEP_WSGI_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_WSGI_PYTHON_LIBDIR");
}
