//! Compiling the kernel files with NVRTC, and the on-disk cache of the results.
//!
//! A kernel file is compiled to PTX for the virtual architecture of the GPU present
//! (`compute_XY`); the driver turns the PTX into machine code when the module is loaded. The PTX
//! is cached as `<cache>/<sha256>-sm_XY.ptx`, the hash covering the flattened source, the NVRTC
//! options and the NVRTC version, so any change to any of them compiles afresh.

use std::path::{Path, PathBuf};

use cudarc::nvrtc::{CompileError, CompileOptions, compile_ptx_with_opts};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::sources::KernelFile;

/// NVRTC options of every kernel file (besides the architecture). IEEE division and square root,
/// no flush-to-zero: the AdamW and sampling kernels rely on them (and write their separately
/// rounded operations as `__fmul_rn` and friends, which contraction leaves alone).
pub const NVRTC_OPTIONS: [&str; 5] = [
    "--std=c++17",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--fmad=true",
];

/// Whether libnvrtc can be opened (it is looked up by name, on `LD_LIBRARY_PATH`).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), Error> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the call writes two ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::NoNvrtc);
    }
    Ok((major, minor))
}

/// Compiles `file` to PTX for compute capability `arch` (e.g. 90), without the cache.
pub fn compile_ptx(file: &KernelFile, arch: u32) -> Result<String, Error> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("--gpu-architecture=compute_{arch}"));
    let opts = CompileOptions {
        options,
        name: Some(file.name.to_string()),
        ..CompileOptions::default()
    };
    match compile_ptx_with_opts(file.flattened(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => Err(Error::Compile {
            file: file.name,
            arch: format!("sm_{arch}"),
            log: match e {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => format!("{other:?}"),
            },
        }),
    }
}

/// The cache directory: `LMSI_KERNEL_CACHE`, else `$XDG_CACHE_HOME/lmsi/kernels`, else
/// `$HOME/.cache/lmsi/kernels`; `None` when none of these is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("LMSI_KERNEL_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("lmsi/kernels")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/lmsi/kernels")))
}

/// The cache file name of `file` for `arch`: `<sha256>-sm_<arch>.ptx`.
pub fn cache_name(file: &KernelFile, arch: u32, nvrtc: (i32, i32)) -> String {
    let mut hash = Sha256::new();
    hash.update(file.flattened().as_bytes());
    for option in NVRTC_OPTIONS {
        hash.update(b"\0");
        hash.update(option.as_bytes());
    }
    hash.update(format!("\0compute_{arch}\0nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-sm_{arch}.ptx")
}

/// The PTX of `file` for `arch`: read from the cache in `dir` if there, else compiled and
/// stored there (written to a temporary file and renamed, so readers never see half a file).
/// With no directory, compiles every time.
pub fn cached_ptx(file: &KernelFile, arch: u32, dir: Option<&Path>) -> Result<String, Error> {
    let Some(dir) = dir else {
        return compile_ptx(file, arch);
    };
    let path = dir.join(cache_name(file, arch, nvrtc_version()?));
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let ptx = compile_ptx(file, arch)?;
    let cache_err = |source| Error::Cache {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(cache_err)?;
    let tmp = path.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&tmp, &ptx).map_err(cache_err)?;
    std::fs::rename(&tmp, &path).map_err(cache_err)?;
    Ok(ptx)
}
