//! Links the examples and their tests to the libpython wsgi-python was built
//! against, by rpath (as wsgi-server's build script does for the binary):
//! otherwise the loader may pick another Python's libpython of the same
//! soname.

fn main() {
    if let Ok(libdir) = std::env::var("DEP_WSGI_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_WSGI_PYTHON_LIBDIR");
}
