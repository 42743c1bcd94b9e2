//! Runs the simulator over many seeds. `SIM_SEEDS=<n>` sets how many (default 300, so a plain
//! `cargo test` stays quick; CI runs thousands), `SIM_SEED=<n>` replays one seed, and
//! `SIM_STEPS=<n>` the steps per seed (default 200).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use barge_sim::{run_seed, Failure, Summary};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn fail(seed: u64, f: &Failure) -> ! {
    // The failure's Display ends with the replay command.
    panic!("SIM FAILED seed={seed}: {f}")
}

#[test]
fn seeded_simulations_hold_every_invariant() {
    let steps = env_u64("SIM_STEPS").unwrap_or(200) as usize;
    if let Some(seed) = env_u64("SIM_SEED") {
        match run_seed(seed, steps) {
            Ok(s) => println!("seed {seed}: ok {s:?}"),
            Err(f) => fail(seed, &f),
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(300);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(0);
    let total = Mutex::new(Summary::default());
    let failures: Mutex<Vec<(u64, Failure)>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds || !failures.lock().unwrap().is_empty() {
                    break;
                }
                match run_seed(seed, steps) {
                    Ok(s) => total.lock().unwrap().add(&s),
                    Err(f) => failures.lock().unwrap().push((seed, f)),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    if let Some((seed, f)) = failures.first() {
        fail(*seed, f);
    }
    let total = total.into_inner().unwrap();
    println!(
        "{seeds} seeds x {steps} steps in {:.1?} on {threads} threads: {total:?}",
        started.elapsed()
    );
    // The schedules must reach the interesting places, or the invariants prove little.
    if seeds >= 100 {
        assert!(total.placements > seeds, "too few placements: {total:?}");
        assert!(
            total.fair_share_placements > seeds / 4,
            "too few fair-share placements: {total:?}"
        );
        assert!(
            total.jobs_succeeded > 0 && total.jobs_failed > 0,
            "{total:?}"
        );
        assert!(total.retries > 0, "no retries: {total:?}");
        assert!(total.jobs_timed_out > 0, "no timeouts: {total:?}");
        assert!(
            total.jobs_time_limited > 0,
            "no time-limit actions: {total:?}"
        );
        assert!(total.reports_refused > 0, "no stale reports: {total:?}");
        assert!(total.restarts > 0 && total.lost_batches > 0, "{total:?}");
        assert!(total.agents_lost > 0, "{total:?}");
        assert!(total.scale_ins > 0, "no scale-in drained a host: {total:?}");
        assert!(total.commands_refused > 0, "{total:?}");
        assert!(
            total.gangs_placed > 0 && total.multinode_succeeded > 0,
            "no multi-node jobs ran: {total:?}"
        );
        // Array jobs: children born every way a child is born, cascades, stops of parents
        // and of single children, refused invalid arrays, large arrays, and arrays that end
        // both ways.
        assert!(
            total.arrays_submitted > seeds && total.arrays_large > 0,
            "too few arrays: {total:?}"
        );
        assert!(
            total.arrays_refused > 0,
            "no invalid array refused: {total:?}"
        );
        assert!(
            total.children_born > seeds && total.children_placed_at_birth > 0,
            "too few children born: {total:?}"
        );
        assert!(
            total.sequential_births > 0,
            "no SEQUENTIAL births: {total:?}"
        );
        assert!(total.n_to_n_births > 0, "no N_TO_N births: {total:?}");
        assert!(total.array_cascades > 0, "no array cascades: {total:?}");
        assert!(
            total.children_stopped_unborn > 0 && total.child_stops > 0 && total.array_stops > 0,
            "too few array cancels and terminates: {total:?}"
        );
        assert!(
            total.arrays_succeeded > 0 && total.arrays_failed > 0,
            "arrays must end both ways: {total:?}"
        );
        assert!(
            total.array_dependents_ran > 0,
            "no job ran after a whole array: {total:?}"
        );
    }
}

#[test]
fn a_seed_replays_identically() {
    for seed in [1, 42, 4242] {
        let a = run_seed(seed, 150).unwrap_or_else(|f| fail(seed, &f));
        let b = run_seed(seed, 150).unwrap_or_else(|f| fail(seed, &f));
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
    assert_ne!(
        run_seed(1, 150).unwrap().fingerprint,
        run_seed(2, 150).unwrap().fingerprint
    );
}
