//! The kernel sources, embedded at build time, and the kernels each file defines.
//!
//! Each `kernels/*.cu` file is one NVRTC program (one CUDA module). Its `#include "..."` lines
//! naming the shared headers (`kernels/include/`) are replaced by the headers' text
//! ([`KernelFile::flattened`]), so NVRTC needs no include path and the cache key covers every line
//! compiled.

/// A kernel file.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// File name under `kernels/`, e.g. `attention.cu`.
    pub name: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// The `extern "C" __global__` functions it defines.
    pub kernels: &'static [&'static str],
}

/// The headers of `kernels/include/`, by the name kernel files include them with.
pub const HEADERS: [(&str, &str); 2] = [
    (
        "lmsi_common.cuh",
        include_str!("../../../kernels/include/lmsi_common.cuh"),
    ),
    (
        "lmsi_params.h",
        include_str!("../../../kernels/include/lmsi_params.h"),
    ),
];

/// Declares [`FILES`] from the kernel table.
macro_rules! kernel_files {
    ($($file:literal { $($(#[$doc:meta])* fn $name:ident($($sig:tt)*);)* })*) => {
        /// Every kernel file, in name order, from [`for_each_kernel!`](crate::for_each_kernel).
        pub const FILES: &[KernelFile] = &[$(
            KernelFile {
                name: $file,
                source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/", $file)),
                kernels: &[$(stringify!($name)),*],
            },
        )*];
    };
}

crate::for_each_kernel!(kernel_files);

/// The file that defines `kernel`.
pub fn file_of(kernel: &str) -> Option<&'static KernelFile> {
    FILES.iter().find(|f| f.kernels.contains(&kernel))
}

impl KernelFile {
    /// The source with the shared headers pasted in place of their `#include` lines (each header
    /// once; includes of other files, such as the CPU shim's behind `#ifdef LMSI_SIM`, stay).
    pub fn flattened(&self) -> String {
        let mut out = String::new();
        let mut pasted = Vec::new();
        paste(self.source, &mut out, &mut pasted);
        out
    }
}

fn paste(text: &str, out: &mut String, pasted: &mut Vec<&'static str>) {
    for line in text.lines() {
        let included = line
            .trim()
            .strip_prefix("#include \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|name| HEADERS.iter().find(|(h, _)| *h == name));
        match included {
            Some((name, header)) => {
                if !pasted.contains(name) {
                    pasted.push(name);
                    paste(header, out, pasted);
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_pastes_each_shared_header_once() {
        let file = file_of("rope").unwrap();
        let flat = file.flattened();
        assert!(!flat.contains("#include \"lmsi_common.cuh\""));
        assert!(!flat.contains("#include \"lmsi_params.h\""));
        assert_eq!(flat.matches("#define LMSI_PARAMS_H").count(), 1);
        assert!(
            flat.contains("#include \"sim.h\""),
            "the shim's include stays"
        );
        assert!(flat.contains("extern \"C\" __global__ void rope("));
    }

    #[test]
    fn the_table_lists_exactly_the_kernels_each_file_defines() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = FILES.iter().map(|f| f.name).collect();
        assert_eq!(on_disk, listed, "every kernels/*.cu file is embedded");
        for file in FILES {
            let names: Vec<&str> = file
                .source
                .match_indices("extern \"C\" __global__ void ")
                .map(|(at, m)| {
                    let rest = file.source[at + m.len()..].trim_start();
                    let rest = match rest.strip_prefix("__launch_bounds__(") {
                        Some(r) => r.split_once(')').unwrap().1.trim_start(),
                        None => rest,
                    };
                    rest.split('(').next().unwrap().trim()
                })
                .collect();
            assert_eq!(names, file.kernels, "{}", file.name);
        }
    }
}
