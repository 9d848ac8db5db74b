//! Training through the library, with data in memory: the events an observer
//! receives, an interrupted run continued from its checkpoint ending with the
//! weights of an uninterrupted one, and errors that name settings, not flags.

mod common;

use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::ModelProto;
use ldam_onnx::train::batches::Augment;
use ldam_onnx::train::checkpoint::Checkpoint;
use ldam_onnx::train::observer::{CheckpointReason, EpochEnd, EpochStart, Start, Step};
use ldam_onnx::train::{Dataset, Observer, Outcome, Pixels, TrainConfig, Trained, Training};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `n` grey 28x28 images, class `i % 10`, a bright band per class on noise.
fn banded(n: usize, salt: usize) -> Dataset {
    let mut pixels = Vec::with_capacity(n * 28 * 28);
    for i in 0..n {
        let class = i % 10;
        for p in 0..28 * 28 {
            let noise = ((i * 7919 + p * 104729 + salt) % 61) as u8;
            let band = (2 * class..2 * class + 3).contains(&(p / 28));
            pixels.push(if band { 200 + noise / 2 } else { noise });
        }
    }
    let labels = (0..n).map(|i| (i % 10) as i64).collect();
    Dataset::new(Pixels::U8(pixels), vec![1, 28, 28], labels, 10, "banded").unwrap()
}

fn patched_mlp(counts: Vec<u64>) -> ModelProto {
    common::patch_with(&common::bundled("mlp"), LossConfig::reference(counts))
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 30,
        augment: Augment::CropFlip,
        ..TrainConfig::default()
    }
}

fn training(epochs: usize) -> Training {
    let train = banded(100, 0);
    let patched = patched_mlp(train.class_counts());
    Training::new(&patched, train, banded(50, 1), config(epochs)).unwrap()
}

/// Every event as a line, and the last checkpoint.
#[derive(Default)]
struct Log {
    events: Vec<String>,
    last: Option<Checkpoint>,
    /// Set this flag after this many steps.
    interrupt_after: Option<(usize, Arc<AtomicBool>)>,
    steps: usize,
}

impl Observer for Log {
    fn started(&mut self, start: &Start<'_>) -> ldam_onnx::Result<()> {
        self.events
            .push(format!("started resumed_at={:?}", start.resumed_at));
        Ok(())
    }
    fn epoch_started(&mut self, e: &EpochStart) -> ldam_onnx::Result<()> {
        self.events.push(format!(
            "epoch {}/{} of {} batches from {}",
            e.epoch, e.epochs, e.batches, e.done
        ));
        Ok(())
    }
    fn step(&mut self, s: &Step) -> ldam_onnx::Result<()> {
        self.events.push(format!("step {}.{}", s.epoch, s.batch));
        self.steps += 1;
        if let Some((after, flag)) = &self.interrupt_after {
            if self.steps == *after {
                flag.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }
    fn evaluating(&mut self, epoch: usize) -> ldam_onnx::Result<()> {
        self.events.push(format!("evaluating {epoch}"));
        Ok(())
    }
    fn epoch_finished(&mut self, end: &EpochEnd<'_>) -> ldam_onnx::Result<()> {
        self.events.push(format!(
            "epoch {} finished, evaluated {}",
            end.record.epoch,
            end.evaluation.is_some()
        ));
        Ok(())
    }
    fn checkpoint(&mut self, c: &Checkpoint, reason: CheckpointReason) -> ldam_onnx::Result<()> {
        self.events.push(format!(
            "checkpoint {reason:?} at {}.{}",
            c.progress.epoch, c.progress.batch
        ));
        self.last = Some(c.clone());
        Ok(())
    }
    fn interrupted(&mut self, epoch: usize, batch: usize) -> ldam_onnx::Result<()> {
        self.events.push(format!("interrupted at {epoch}.{batch}"));
        Ok(())
    }
    fn finished(&mut self, trained: &Trained) -> ldam_onnx::Result<()> {
        self.events
            .push(format!("finished after {} epochs", trained.records.len()));
        Ok(())
    }
}

fn trained(outcome: Outcome) -> Box<Trained> {
    match outcome {
        Outcome::Trained(trained) => trained,
        Outcome::Interrupted { epoch, batch } => panic!("interrupted at {epoch}.{batch}"),
    }
}

fn assert_same_state(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.progress.epoch, b.progress.epoch);
    assert_eq!(a.progress.batch, b.progress.batch);
    let mut names: Vec<&String> = a.state.keys().collect();
    names.sort();
    assert_eq!(names.len(), b.state.len());
    for name in names {
        assert_eq!(
            f32_values(&a.state[name]),
            f32_values(&b.state[name]),
            "{name}"
        );
    }
}

#[test]
fn an_observer_sees_every_epoch_step_evaluation_and_checkpoint_in_order() {
    let mut log = Log::default();
    let done = trained(training(2).run(&mut log).unwrap());
    let mut expected = vec!["started resumed_at=None".to_string()];
    for epoch in 0..2 {
        expected.push(format!("epoch {epoch}/2 of 4 batches from 0"));
        expected.extend((1..=4).map(|b| format!("step {epoch}.{b}")));
        expected.push(format!("evaluating {epoch}"));
        expected.push(format!("epoch {epoch} finished, evaluated true"));
        expected.push(format!("checkpoint EpochEnd at {}.0", epoch + 1));
    }
    expected.push("finished after 2 epochs".into());
    assert_eq!(log.events, expected);
    assert_eq!(done.records.len(), 2);
    assert_eq!(done.evaluation.total(), 50);
    assert_eq!(done.train_counts, vec![10; 10]);
    // The deployable model records what `eval` needs to read it alone.
    let recorded = ldam_onnx::ldam::contract::recorded_train_counts(&done.model).unwrap();
    assert_eq!(recorded, Some(vec![10; 10]));
}

#[test]
fn an_interrupted_run_continued_from_its_checkpoint_ends_with_the_uninterrupted_weights() {
    let mut whole = training(2);
    let mut log = Log::default();
    trained(whole.run(&mut log).unwrap());
    let uninterrupted = log.last.expect("a checkpoint per epoch");

    // Stop after step 6: the middle of epoch 2 (4 steps per epoch).
    let mut first = training(2);
    let flag = first.interrupt_flag();
    let mut log = Log {
        interrupt_after: Some((6, flag)),
        ..Log::default()
    };
    match first.run(&mut log).unwrap() {
        Outcome::Interrupted { epoch, batch } => assert_eq!((epoch, batch), (1, 2)),
        Outcome::Trained(_) => panic!("the flag was set mid-run"),
    }
    assert_eq!(
        &log.events[log.events.len() - 2..],
        ["interrupted at 1.2", "checkpoint Interrupted at 1.2"]
    );
    let stopped = log.last.expect("a checkpoint of the position");

    // A new Training, as a new process would build, continues from it.
    let mut second = training(2);
    second.resume_from(stopped).unwrap();
    let mut log = Log::default();
    trained(second.run(&mut log).unwrap());
    assert_eq!(log.events[0], "started resumed_at=Some((1, 2))");
    assert_eq!(log.events[1], "epoch 1/2 of 4 batches from 2");
    assert_same_state(&log.last.unwrap(), &uninterrupted);
}

#[test]
fn library_errors_name_the_settings() {
    let train = banded(100, 0);
    let other_counts = patched_mlp(vec![5; 10]);
    let error = Training::new(&other_counts, train.clone(), banded(10, 1), config(1))
        .err()
        .expect("counts differ")
        .to_string();
    assert!(error.contains("allow_count_mismatch"), "{error}");
    assert!(!error.contains("--"), "{error}");

    let patched = patched_mlp(train.class_counts());
    let bad = TrainConfig {
        batch_size: 0,
        ..config(1)
    };
    let error = Training::new(&patched, train.clone(), banded(10, 1), bad)
        .err()
        .expect("batch size 0")
        .to_string();
    assert_eq!(error, "batch_size must be at least 1");

    let unpatched = common::bundled("mlp");
    let error = Training::new(&unpatched, train, banded(10, 1), config(1))
        .err()
        .expect("not patched")
        .to_string();
    assert!(error.contains("not patched"), "{error}");
}
