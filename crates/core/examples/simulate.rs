//! The placement simulation on a large mixed workload, in virtual time: prints the makespan
//! against its lower bound, utilisation, the worst wait per priority and per queue, and the
//! shares two contended queues got against their weights. Run by `bench/simulate.sh`.

use taskwarden_core::placement::sim::{contended_workload, mixed_workload, simulate};

fn main() {
    let scale: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let workload = mixed_workload(scale, 7);
    let started = std::time::Instant::now();
    let r = simulate(&workload);
    println!("mixed workload: {} tasks on {} workers (scale {scale})", workload.tasks.len(), workload.workers.len());
    println!("| measurement | value | target |");
    println!("|---|---|---|");
    println!("| makespan | {:.1} s | |", r.makespan.as_secs_f64());
    println!(
        "| lower bound (max of work / capacity, last arrival + length) | {:.1} s | |",
        r.lower_bound.as_secs_f64()
    );
    println!("| makespan / lower bound | {:.3} | <= 1.10 |", r.stretch());
    println!("| utilisation | {:.2} | |", r.utilisation);
    for (p, w) in &r.worst_wait_by_priority {
        println!("| worst wait, priority {p} | {:.1} s | bounded |", w.as_secs_f64());
    }
    for (q, w) in &r.worst_wait_by_queue {
        println!("| worst wait, queue {q} | {:.1} s | |", w.as_secs_f64());
    }
    let c = simulate(&contended_workload(200 * scale));
    for (q, share) in &c.contended_share {
        let weight = if q == "heavy" { 0.75 } else { 0.25 };
        println!("| contended share, queue {q} (weight {weight}) | {share:.3} | within 10% of the weight |");
    }
    println!("(simulated in {:.1} s of real time)", started.elapsed().as_secs_f64());
}
