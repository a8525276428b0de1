//! One job per item on every CPU, largest items first: the pool behind the guest's digest of
//! its root, and the builder's hashing and zero-scanning of file contents.
//!
//! Items are taken in order of decreasing size, so that one big file does not start last and
//! leave the other threads idle while it finishes. Each thread owns one scratch buffer for its
//! jobs. The first error stops every thread from taking more items.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Threads used at most: the jobs read files, and beyond this the disk and the memory bus, not
/// the CPUs, set the pace.
const MAX_THREADS: usize = 8;

/// Runs `job` on every item of `items` on up to one thread per CPU, the largest (by `size`)
/// first, each thread lending its jobs a scratch buffer of `scratch` bytes. The results come
/// back in the order of `items`; the first error met is returned instead.
pub fn map_largest_first<T, R, E>(
    items: &[T],
    size: impl Fn(&T) -> u64,
    scratch: usize,
    job: impl Fn(&T, &mut [u8]) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(&items[i])));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failure: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buffer = vec![0u8; scratch];
                let mut local = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    match job(&items[i], &mut buffer) {
                        Ok(r) => local.push((i, r)),
                        Err(e) => {
                            failure
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            next.store(order.len(), Ordering::Relaxed);
                            break;
                        }
                    }
                }
                let mut all = done.lock().unwrap_or_else(|p| p.into_inner());
                for (i, r) in local {
                    all[i] = Some(r);
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // Without a failure every item was taken and its result stored.
    Ok(done
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<u64> = (0..100).map(|i| (i * 37) % 101).collect();
        let got = map_largest_first(
            &items,
            |&n| n,
            16,
            |&n, buf| {
                assert_eq!(buf.len(), 16);
                Ok::<_, ()>(n * 2)
            },
        )
        .unwrap();
        assert_eq!(got, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        let none: Vec<u64> = Vec::new();
        assert!(map_largest_first(&none, |&n| n, 1, |&n, _| Ok::<_, ()>(n))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_error_is_returned_and_stops_the_rest() {
        let items: Vec<u64> = (0..1000).collect();
        let ran = AtomicUsize::new(0);
        let got = map_largest_first(
            &items,
            |&n| n,
            1,
            |&n, _| {
                ran.fetch_add(1, Ordering::Relaxed);
                if n == 990 {
                    Err(format!("item {n}"))
                } else {
                    Ok(n)
                }
            },
        );
        assert_eq!(got, Err("item 990".to_string()));
        // Largest first: 999..990 came before the failure; far from all 1000 ran after it.
        assert!(ran.load(Ordering::Relaxed) < 1000);
    }
}
