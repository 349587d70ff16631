//! An ordered work pool: worker threads run `work(i)` for every `i` in `0..n` while one
//! consumer takes the results strictly in index order. A worker claims item `i` only while
//! `i < consumed + window`, so at most `window` items are claimed but not yet taken (memory
//! stays flat however far decoding runs ahead). Both sides block on condition variables:
//! the consumer until the next item in order is ready, a worker until the consumer makes room.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};

struct State<T> {
    /// The next index a worker will claim.
    claimed: usize,
    /// Items the consumer has taken (the next one it wants).
    consumed: usize,
    /// Finished items not yet taken.
    done: BTreeMap<usize, T>,
    /// Set when the consumer is finished: workers claim nothing more.
    stop: bool,
    /// Workers still running (a worker that panicked counts as gone).
    workers: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item is finished or a worker leaves.
    ready: Condvar,
    /// Signalled when the consumer takes an item or stops.
    room: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.room.notify_all();
    }
}

/// The consumer's side of [`run_ordered`].
pub struct Ordered<'a, T> {
    shared: &'a Shared<T>,
    next: usize,
    n: usize,
}

impl<T> Ordered<'_, T> {
    /// The result of the next item in index order, waiting for it; `None` after the last
    /// item, or when the workers are all gone without finishing the next one (one panicked).
    pub fn next_item(&mut self) -> Option<T> {
        if self.next >= self.n {
            return None;
        }
        let mut st = self.shared.lock();
        loop {
            if let Some(r) = st.done.remove(&self.next) {
                self.next += 1;
                st.consumed = self.next;
                drop(st);
                self.shared.room.notify_all();
                return Some(r);
            }
            if st.workers == 0 {
                return None;
            }
            st = self
                .shared
                .ready
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Tells the consumer a worker has left, however it left. A worker that panicked stops the
/// others too: its item never comes, so the consumer must see the end rather than wait.
struct Leaving<'a, T>(&'a Shared<T>);

impl<T> Drop for Leaving<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
        self.0.lock().workers -= 1;
        self.0.ready.notify_all();
    }
}

/// Stops the workers when the consumer returns, or unwinds.
struct StopOnDrop<'a, T>(&'a Shared<T>);

impl<T> Drop for StopOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Runs `work(i)` for `i` in `0..n` on `threads` threads (at least one), at most `window` items
/// (at least one) ahead of the consumer, and hands `consume` the results in index order. When
/// `consume` returns, workers finish the item in hand and claim no more; returns once all
/// have ended.
pub fn run_ordered<T, R>(
    n: usize,
    threads: usize,
    window: usize,
    work: impl Fn(usize) -> T + Sync,
    consume: impl FnOnce(&mut Ordered<'_, T>) -> R,
) -> R
where
    T: Send,
{
    let threads = threads.max(1);
    let window = window.max(1);
    let shared = Shared {
        state: Mutex::new(State {
            claimed: 0,
            consumed: 0,
            done: BTreeMap::new(),
            stop: false,
            workers: threads,
        }),
        ready: Condvar::new(),
        room: Condvar::new(),
    };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (shared, work) = (&shared, &work);
            scope.spawn(move || {
                let _leaving = Leaving(shared);
                while let Some(i) = claim(shared, n, window) {
                    let r = work(i);
                    shared.lock().done.insert(i, r);
                    shared.ready.notify_all();
                }
            });
        }
        let _stop = StopOnDrop(&shared);
        consume(&mut Ordered {
            shared: &shared,
            next: 0,
            n,
        })
    })
}

/// The next index for a worker, waiting while it is `window` or more ahead of the consumer;
/// `None` when every item is claimed or the consumer stopped.
fn claim<T>(shared: &Shared<T>, n: usize, window: usize) -> Option<usize> {
    let mut st = shared.lock();
    loop {
        if st.stop || st.claimed >= n {
            return None;
        }
        if st.claimed < st.consumed + window {
            st.claimed += 1;
            return Some(st.claimed - 1);
        }
        st = shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn later_items_finishing_first_are_delivered_in_order() {
        // Item 0 is held back until items 1..=5 have finished, so they finish first.
        let (tx, rx) = mpsc::channel::<usize>();
        let rx = Mutex::new(rx);
        let finished = AtomicUsize::new(0);
        let got = run_ordered(
            20,
            4,
            8,
            |i| {
                if i == 0 {
                    let rx = rx.lock().unwrap();
                    for _ in 1..=5 {
                        rx.recv_timeout(Duration::from_secs(10)).unwrap();
                    }
                } else if i <= 5 {
                    tx.send(i).unwrap();
                }
                finished.fetch_add(1, Ordering::SeqCst);
                (i, finished.load(Ordering::SeqCst))
            },
            |o| std::iter::from_fn(|| o.next_item()).collect::<Vec<_>>(),
        );
        let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
        // Item 0 really finished after the five it waited for.
        assert!(got[0].1 >= 6, "item 0 finished as number {}", got[0].1);
    }

    #[test]
    fn workers_stay_within_the_window() {
        let (n, window) = (40, 5);
        let highest = AtomicUsize::new(0);
        run_ordered(
            n,
            8,
            window,
            |i| {
                highest.fetch_max(i, Ordering::SeqCst);
                i
            },
            |o| {
                for k in 0..n {
                    // The consumer has taken k items: nothing beyond k + window - 1 is claimed,
                    // and the workers do reach that bound (they block rather than stop short).
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let bound = (k + window - 1).min(n - 1);
                    while highest.load(Ordering::SeqCst) < bound {
                        assert!(Instant::now() < deadline, "workers stalled below {bound}");
                        std::thread::yield_now();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    assert_eq!(highest.load(Ordering::SeqCst), bound, "after {k} taken");
                    assert_eq!(o.next_item(), Some(k));
                }
                assert_eq!(o.next_item(), None);
            },
        );
    }

    #[test]
    fn an_error_item_is_delivered_in_its_place() {
        let got: Vec<Result<usize, String>> = run_ordered(
            6,
            3,
            4,
            |i| {
                if i == 2 {
                    Err(format!("item {i} is unreadable"))
                } else {
                    // Later items finish sooner.
                    std::thread::sleep(Duration::from_millis(5 * (6 - i as u64)));
                    Ok(i)
                }
            },
            |o| std::iter::from_fn(|| o.next_item()).collect(),
        );
        assert_eq!(
            got,
            vec![
                Ok(0),
                Ok(1),
                Err("item 2 is unreadable".to_string()),
                Ok(3),
                Ok(4),
                Ok(5)
            ]
        );
    }

    #[test]
    fn a_consumer_that_stops_early_ends_the_workers() {
        let started = AtomicUsize::new(0);
        let first = run_ordered(
            1000,
            4,
            6,
            |i| {
                started.fetch_add(1, Ordering::SeqCst);
                i
            },
            |o| o.next_item(),
        );
        assert_eq!(first, Some(0));
        // Returned (no worker left waiting), having claimed no more than the window allowed.
        assert!(started.load(Ordering::SeqCst) <= 1 + 6);
    }

    #[test]
    fn a_worker_that_panics_ends_the_items_instead_of_hanging() {
        let seen = Mutex::new(Vec::new());
        let r = std::panic::catch_unwind(|| {
            run_ordered(
                10,
                2,
                4,
                |i| {
                    if i == 3 {
                        panic!("decoder bug");
                    }
                    i
                },
                |o| {
                    while let Some(i) = o.next_item() {
                        seen.lock().unwrap().push(i);
                    }
                },
            )
        });
        // The consumer saw 0, 1, 2 and then the end; the scope re-raises the panic.
        assert!(r.is_err());
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn no_items() {
        let got = run_ordered(0, 2, 4, |i| i, |o| o.next_item());
        assert_eq!(got, None);
    }
}
