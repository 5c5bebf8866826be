//! argon2's own threads, below the Check path in CPU priority.
//!
//! A cold verification costs ~10 ms of CPU; a cache hit costs microseconds. On tokio's blocking
//! pool argon2 competed for the cores as an equal of the threads answering cached keys, so a
//! flood of wrong secrets took a whole core from them at the scheduler's pleasure. Here argon2
//! runs on `verify.workers` threads of its own whose nice value is `verify.nice` above the
//! process's (10 by default). The kernel then runs them whenever a core
//! would otherwise idle, but preempts them for the async workers: when the cores are
//! contended, cached keys are served first and cold verifications take what is left. The
//! weight of a nice-10 thread (110 against 1024 at nice 0) still gives it a share under full
//! load, so verifications slow down but never stop. Measured (`bench/flood_ab.sh`, cores kept
//! busy by cached keys): a cold verification's worst case went from 81 ms to 290 ms at nice 10
//! and to 495 ms at nice 19, Envoy's whole 0.5 s timeout, which is why 19 is not the default.
//!
//! Work waits in one of three lanes, and a free worker always takes the urgent lane's first,
//! then the later lane's, then the background lane's: the caller (`authn`) puts in the urgent
//! lane the verifications of keys no wrong secret was seen for lately, so a key's first
//! verification is not queued behind a flood of wrong secrets for other keys; suspect keys'
//! verifications wait in the later lane; the admin API's hashing of new secrets waits in the
//! background lane, so key writes never delay a Check. How much work may wait is bounded by
//! the caller, not here.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::oneshot;
use tracing::warn;

type Job = Box<dyn FnOnce() + Send>;

/// The worker threads; they exit once this is dropped and the queued work is done.
pub struct Argon2Workers {
    urgent: crossbeam_channel::Sender<Job>,
    later: crossbeam_channel::Sender<Job>,
    background: crossbeam_channel::Sender<Job>,
}

/// Which queue a job waits in: a free worker takes `Urgent` work before any `Later` work, and
/// both before any `Background` work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Urgent,
    Later,
    Background,
}

/// A worker ended before answering: the work panicked (a bug), or the workers were stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the argon2 worker ended without an answer")]
pub struct WorkerLost;

impl Argon2Workers {
    /// Starts `count` threads, each lowering its own CPU priority by `nice` (0: the same as
    /// the rest of the process).
    pub fn start(count: usize, nice: i32) -> std::io::Result<Self> {
        let (urgent, urgent_queue) = crossbeam_channel::unbounded::<Job>();
        let (later, later_queue) = crossbeam_channel::unbounded::<Job>();
        let (background, background_queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..count {
            let queues = [
                urgent_queue.clone(),
                later_queue.clone(),
                background_queue.clone(),
            ];
            std::thread::Builder::new()
                .name(format!("keyward-argon2-{n}"))
                .spawn(move || {
                    lower_priority(nice);
                    let [urgent_queue, later_queue, background_queue] = &queues;
                    loop {
                        let job = crossbeam_channel::select_biased! {
                            recv(urgent_queue) -> job => job,
                            recv(later_queue) -> job => job,
                            recv(background_queue) -> job => job,
                        };
                        // The senders go together: once one lane is closed, the work still
                        // queued in every lane is done, in lane order, before the thread ends.
                        let Ok(job) = job else {
                            for queue in &queues {
                                while let Ok(job) = queue.recv() {
                                    let _ = catch_unwind(AssertUnwindSafe(job));
                                }
                            }
                            break;
                        };
                        // The job's answer channel is dropped by the unwind: its caller gets
                        // `WorkerLost`, and this worker lives on for the next one.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Argon2Workers {
            urgent,
            later,
            background,
        })
    }

    /// Runs `work` on the next free worker, after the work queued before it in `lane` (and,
    /// for `Later`, all of `Urgent`'s), and waits for its result. Work whose caller has gone
    /// (Envoy gave up on the Check) is dropped unrun when its turn comes: argon2 is not spent
    /// on an answer nobody will read.
    pub async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerLost> {
        let (answer, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            if !answer.is_closed() {
                let _ = answer.send(work());
            }
        });
        match lane {
            Lane::Urgent => self.urgent.send(job),
            Lane::Later => self.later.send(job),
            Lane::Background => self.background.send(job),
        }
        .map_err(|_| WorkerLost)?;
        result.await.map_err(|_| WorkerLost)
    }
}

/// Raises the calling thread's nice value by `nice`, up to 19. On Linux the nice value belongs
/// to the thread, not the process, so this leaves the async workers as they are. Failing to
/// lower the priority (a sandbox that forbids `setpriority`) is no reason to refuse to verify:
/// it is logged and argon2 runs at the process's priority.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let thread = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(thread)).and_then(|current| {
        rustix::process::setpriority_process(Some(thread), current.saturating_add(nice).min(19))
    });
    if let Err(error) = lowered {
        warn!(%error, "cannot lower the argon2 workers' CPU priority; they run at the process's");
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::Poll;

    use super::*;

    /// The nice value of the calling thread.
    fn current_nice() -> std::io::Result<i32> {
        Ok(rustix::process::getpriority_process(Some(
            rustix::thread::gettid(),
        ))?)
    }

    #[tokio::test]
    async fn runs_work_on_threads_of_lower_priority() {
        let workers = Argon2Workers::start(2, 7).expect("start");
        let ours = current_nice().expect("nice");
        let theirs = workers
            .run(Lane::Urgent, || {
                (
                    current_nice().expect("nice"),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
            .expect("answer");
        assert_eq!(theirs.0, (ours + 7).min(19));
        assert!(
            theirs
                .1
                .is_some_and(|name| name.starts_with("keyward-argon2-")),
            "ran on an argon2 worker"
        );
        assert_eq!(
            current_nice().expect("nice"),
            ours,
            "the caller's is unchanged"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_loses_its_answer_but_not_the_worker() {
        let workers = Argon2Workers::start(1, 0).expect("start");
        let lost = workers
            .run(Lane::Urgent, || -> u32 { panic!("a bug in the work") })
            .await;
        assert!(matches!(lost, Err(WorkerLost)));
        assert_eq!(
            workers.run(Lane::Later, || 41 + 1).await.expect("answer"),
            42
        );
    }

    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }

    #[tokio::test]
    async fn urgent_work_goes_first_and_abandoned_work_never_runs() {
        let workers = Arc::new(Argon2Workers::start(1, 0).expect("start"));
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (started, holding) = oneshot::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = tokio::spawn({
            let workers = workers.clone();
            async move {
                workers
                    .run(Lane::Urgent, move || {
                        let _ = started.send(());
                        let _ = held.recv();
                    })
                    .await
            }
        });
        holding.await.expect("the worker is held");

        let job = |lane: Lane, name: &'static str| {
            let ran = ran.clone();
            Box::pin(workers.run(lane, move || ran.lock().unwrap().push(name)))
        };
        // One poll queues a job; the held worker cannot take any of them yet.
        let mut background = job(Lane::Background, "background");
        let mut later = job(Lane::Later, "later");
        let mut abandoned = job(Lane::Urgent, "abandoned");
        let mut urgent = job(Lane::Urgent, "urgent");
        assert!(poll_once(&mut background).await.is_pending());
        assert!(poll_once(&mut later).await.is_pending());
        assert!(poll_once(&mut abandoned).await.is_pending());
        assert!(poll_once(&mut urgent).await.is_pending());
        drop(abandoned);

        release.send(()).expect("the holder waits");
        holder.await.unwrap().expect("held");
        urgent.await.expect("ran");
        later.await.expect("ran");
        background.await.expect("ran");
        assert_eq!(*ran.lock().unwrap(), ["urgent", "later", "background"]);
    }
}
