//! Compiles the CPU shim (`kernels/sim/`) and every kernel file (`kernels/*.cu`) as C++20 into one
//! static library, `lmsi_sim`, which `lmsi_cuda::sim` calls. The `.cu` files are the ones NVRTC
//! compiles for a GPU; `-DLMSI_SIM` switches their headers to the shim, and `sim/launchers.cpp`
//! defines the launcher of every kernel in the list (`kernels/include/lmsi_kernels.h`). No CUDA
//! installation is involved.

use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    let root = root.canonicalize().expect("kernels/ beside the crates");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", root.display());

    let mut sources = vec![root.join("sim/sim.cpp"), root.join("sim/launchers.cpp")];
    // g++ does not take `.cu` as C++: each kernel file is compiled through a one-line wrapper.
    for cu in kernel_files(&root)
        .into_iter()
        .chain([root.join("sim/selftest.cu")])
    {
        println!("cargo:rerun-if-changed={}", cu.display());
        let stem = cu
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name");
        let wrapper = out.join(format!("sim_{stem}.cpp"));
        std::fs::write(&wrapper, format!("#include \"{}\"\n", cu.display()))
            .expect("write to OUT_DIR");
        sources.push(wrapper);
    }
    for dir in ["include", "sim"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("kernels/ subfolder") {
            println!(
                "cargo:rerun-if-changed={}",
                entry.expect("directory entry").path().display()
            );
        }
    }

    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .define("LMSI_SIM", None)
        .include(root.join("include"))
        .include(root.join("sim"))
        // Separately rounded f32 operations, as the kernels' __fmul_rn and friends promise.
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        // `#pragma unroll` is for nvcc.
        .flag("-Wno-unknown-pragmas")
        .files(&sources)
        .compile("lmsi_sim");
}

/// The kernel files, `kernels/*.cu`, in name order.
fn kernel_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("kernels/")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    files
}
