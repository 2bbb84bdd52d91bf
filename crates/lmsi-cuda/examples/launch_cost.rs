use lmsi_cuda::params::*;
use lmsi_cuda::sim::{Schedule, Sim};
fn main() {
    let sim = Sim::new(Schedule::InOrder);
    let mut x = vec![1.0f32; 4096];
    let y = vec![1.0f32; 4096];
    let t = std::time::Instant::now();
    for _ in 0..200 {
        sim.add_assign(
            &LmsiVecParams {
                len: 4096,
                factor: 0.0,
            },
            &mut x,
            &y,
        )
        .unwrap();
    }
    println!("add_assign 4096: {:?} per launch", t.elapsed() / 200);
    let logits = vec![0.5f32; 6 * 448];
    let (mut tok, mut lp, mut slp, mut st) =
        (vec![0u32; 6], vec![0f32; 6], vec![0f32; 6], vec![0i32; 6]);
    let p = LmsiSampleParams {
        seed: 1,
        rows: 6,
        vocab: 448,
        temperature: 0.7,
        top_p: 1.0,
        top_k: 40,
    };
    let t = std::time::Instant::now();
    for _ in 0..50 {
        sim.sample_rows(
            &p,
            &mut tok,
            &mut lp,
            &mut slp,
            &mut st,
            &logits,
            &[1, 2, 3, 4, 5, 6],
            &[0; 6],
        )
        .unwrap();
    }
    println!("sample_rows 6x448: {:?} per launch", t.elapsed() / 50);
}
