//! NVRTC compilation of every kernel file, the PTX cache, and opening a GPU (feature `cuda`).
//!
//! The NVRTC tests need libnvrtc on `LD_LIBRARY_PATH` (e.g. the CUDA 13 wheel's `nvidia/cu13/lib`,
//! see scripts/cuda-toolchain.sh) and no GPU; without the library they print why and pass.
#![cfg(feature = "cuda")]

use lmsi_cuda::cuda::{
    cache_name, cached_ptx, compile_ptx, driver_available, nvrtc_available, nvrtc_version,
};
use lmsi_cuda::sources::{FILES, KernelFile};
use lmsi_cuda::{Device, Error};

fn nvrtc_or_skip(test: &str) -> bool {
    if !nvrtc_available() {
        eprintln!(
            "{test}: skipped, libnvrtc is not loadable (put the CUDA toolkit's lib/ on LD_LIBRARY_PATH)"
        );
    }
    nvrtc_available()
}

#[test]
fn every_kernel_file_compiles_for_ampere_and_hopper() {
    if !nvrtc_or_skip("every_kernel_file_compiles_for_ampere_and_hopper") {
        return;
    }
    for arch in [80, 90] {
        for file in FILES {
            let ptx = compile_ptx(file, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(ptx.contains(&format!(".target sm_{arch}")), "{}", file.name);
            for kernel in file.kernels {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{} for sm_{arch} lacks {kernel}",
                    file.name
                );
            }
        }
    }
}

#[test]
fn a_broken_kernel_reports_nvrtcs_log() {
    if !nvrtc_or_skip("a_broken_kernel_reports_nvrtcs_log") {
        return;
    }
    let broken = KernelFile {
        name: "broken.cu",
        source: "extern \"C\" __global__ void broken(float* x) { x[0] = undeclared; }\n",
        kernels: &["broken"],
    };
    match compile_ptx(&broken, 90) {
        Err(Error::Compile { file, arch, log }) => {
            assert_eq!((file, arch.as_str()), ("broken.cu", "sm_90"));
            assert!(log.contains("undeclared"), "{log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn compiled_kernels_are_cached_by_content() {
    if !nvrtc_or_skip("compiled_kernels_are_cached_by_content") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = &FILES[0];
    let version = nvrtc_version().unwrap();
    let name = cache_name(file, 80, version);
    let (hash, suffix) = name.split_once('-').unwrap();
    assert_eq!(suffix, "sm_80.ptx");
    assert!(
        hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    let first = cached_ptx(file, 80, Some(dir.path())).unwrap();
    let path = dir.path().join(&name);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    // A second call reads the file: prove it by changing the file.
    std::fs::write(&path, "// cached\n").unwrap();
    assert_eq!(
        cached_ptx(file, 80, Some(dir.path())).unwrap(),
        "// cached\n"
    );
    // Another architecture or another source is another entry.
    assert_ne!(cache_name(file, 90, version), name);
    assert_ne!(cache_name(&FILES[1], 80, version), name);
}

#[test]
fn opening_a_gpu_without_a_driver_is_an_error_not_a_panic() {
    match Device::gpu(0) {
        Ok(device) => {
            assert!(driver_available());
            assert!(!device.is_sim());
            eprintln!(
                "GPU present: {device:?}, memory {:?}",
                device.memory().unwrap()
            );
        }
        Err(Error::NoDriver) => {
            assert!(!driver_available());
            assert_eq!(
                Error::NoDriver.to_string(),
                "no CUDA driver (libcuda) found"
            );
        }
        Err(e) => eprintln!("opening_a_gpu: driver present but no usable GPU: {e}"),
    }
}
