//! What the dashboard adds to a request, in instructions: a count in a route's or a
//! filter's recent window (`host/src/metrics/window.rs`, compiled in as is), timed or
//! not, and one clock read with the arithmetic a timed filter does on it.
//!
//!     rustc -O --edition 2024 benches/compare/window-cost.rs -o /tmp/window-cost
//!     for m in none record untimed clock; do
//!       valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/window-cost $m 1000000
//!     done
//!
//! (each `Collected` total minus `none`'s, divided by the 1,000,000 iterations).

#[allow(dead_code)]
#[path = "../../host/src/metrics/window.rs"]
mod window;

use std::hint::black_box;
use std::time::{Duration, Instant};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let w = window::Window::default();
    let now = Instant::now();
    let mut spent = Duration::ZERO;
    for i in 0..n {
        match mode.as_str() {
            "record" => w.record(
                black_box(now),
                black_box(Some(Duration::from_micros(300 + (i & 1023)))),
                black_box(false),
            ),
            "untimed" => w.record(black_box(now), black_box(None), black_box(false)),
            "clock" => spent += Instant::now().duration_since(now),
            _ => {
                black_box(i);
            }
        }
    }
    black_box(spent);
    println!("{mode}: {} counted", w.summary(now, 60).requests);
}
