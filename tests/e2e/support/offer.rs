//! A steady offered load for rate-limit tests: requests at a fixed rate from several
//! clients, tallied by answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::client;

/// What a steady offered load came to.
pub struct Offered {
    /// Answered 200.
    pub admitted: usize,
    /// Answered 429.
    pub refused: usize,
    /// Any other answer: status and body.
    pub unexpected: Vec<String>,
    /// From the first request sent to the last.
    pub elapsed: Duration,
}

/// Offers `per_url` requests per second to each of `urls` for `run_for`, spread over
/// `clients` clients (connections) per URL, each firing at a fixed interval.
pub async fn offer(urls: &[String], clients: u32, per_url: u32, run_for: Duration) -> Offered {
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let every = Duration::from_secs_f64(f64::from(clients) / f64::from(per_url));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for url in urls {
        for _ in 0..clients {
            let (url, admitted, refused) = (url.clone(), admitted.clone(), refused.clone());
            let unexpected = unexpected.clone();
            tasks.push(tokio::spawn(async move {
                let c = client();
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if start.elapsed() >= run_for {
                        break;
                    }
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status() == 429 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            if let Ok(mut u) = unexpected.lock() {
                                u.push(format!("{status}: {body}"));
                            }
                        }
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("client task: {e}"));
    }
    let unexpected = unexpected.lock().map(|u| u.clone()).unwrap_or_default();
    Offered {
        admitted: admitted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        unexpected,
        elapsed: run_for.min(start.elapsed()),
    }
}
