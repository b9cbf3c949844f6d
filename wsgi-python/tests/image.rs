//! `image::release` / `image::restore` on the real libpython: the data
//! pages leave the process, come back byte for byte, and an interpreter
//! started after that works. One test: the interpreter can be started once
//! per process, and nothing may use libpython while its pages are dropped.

use pyo3::prelude::*;
use wsgi_python::{initialize, PythonConfig};

/// libpython's writable file mappings: (start, end) and the Private_Dirty kB
/// of each, from /proc/self/smaps.
fn libpython_data() -> Vec<(usize, usize, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut found = Vec::new();
    let mut current = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].contains('-') && fields[1].len() == 4 {
            current = None;
            let is_libpython = fields
                .get(5)
                .is_some_and(|path| path.rsplit('/').next().unwrap().starts_with("libpython"));
            if is_libpython && fields[1] == "rw-p" {
                let (start, end) = fields[0].split_once('-').unwrap();
                current = Some((
                    usize::from_str_radix(start, 16).unwrap(),
                    usize::from_str_radix(end, 16).unwrap(),
                ));
            }
        } else if let (Some((start, end)), Some(&"Private_Dirty:")) = (current, fields.first()) {
            found.push((start, end, fields[1].parse().unwrap()));
        }
    }
    found
}

fn contents(regions: &[(usize, usize, u64)]) -> Vec<u8> {
    regions
        .iter()
        .flat_map(|&(start, end, _)| {
            // SAFETY: a readable mapping of this process, not written meanwhile.
            unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec()
        })
        .collect()
}

#[test]
fn released_data_comes_back_whole() {
    let before = libpython_data();
    assert!(!before.is_empty(), "no libpython data mapping");
    let dirty: u64 = before.iter().map(|region| region.2).sum();
    assert!(
        dirty > 256,
        "the loader's relocations dirty libpython's data: {dirty} kB"
    );
    let copy = contents(&before);

    // SAFETY: no interpreter runs in this process yet and this test is the
    // binary's only one; nothing touches libpython until `restore`.
    let released = unsafe { wsgi_python::image::release() };
    assert!(released >= dirty as usize * 1024, "{released} bytes");
    let after: u64 = libpython_data().iter().map(|region| region.2).sum();
    assert!(after < 16, "{after} kB still private");
    wsgi_python::image::restore();
    assert!(
        contents(&before) == copy,
        "libpython's data differs after restore"
    );

    // Twice, as a master does for every fork.
    // SAFETY: as above.
    unsafe { wsgi_python::image::release() };
    wsgi_python::image::restore();
    assert!(
        contents(&before) == copy,
        "libpython's data differs after restore"
    );

    initialize(&PythonConfig::default()).unwrap();
    let answer = Python::attach(|py| {
        py.eval(
            c"sum(len(str(type(x))) for x in (1, 'a', b'', [], {}, 1.5))",
            None,
            None,
        )
        .unwrap()
        .extract::<usize>()
        .unwrap()
    });
    assert!(answer > 0);
}
