//! Replayed steps (`engine/src/replay.rs`): a recorded training step re-submitted gives bit for
//! bit what running its code again gives, step after step; what a recording may not do is an
//! error; nothing a caller holds is overwritten.

use proptest::prelude::*;
use std::sync::Mutex;
use vkgrad::{IntTensor, Replay, Rng, Tensor, REDUCE_OPS};
use vkgrad_tests::dag::{dag, leaf, Dag};
use vkgrad_tests::*;

/// A recording takes the device for its thread: the tests of this file take turns.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// One SGD-with-momentum step of a two-layer network with a softmax cross-entropy-like loss:
/// inputs (x, w1, b1, w2, v1, vb1, v2); outputs (w1, b1, w2, v1, vb1, v2, loss).
fn step(a: &[Tensor]) -> vkgrad::Result<Vec<Tensor>> {
    let (x, w1, b1, w2) = (&a[0], &a[1], &a[2], &a[3]);
    let h = x.matmul(w1)?.add(b1)?.relu()?;
    let y = h.matmul(w2)?;
    let loss = y
        .log_softmax()?
        .neg()?
        .mean_all()?
        .add(&y.square()?.mean_all()?.mul_scalar(0.01)?)?;
    loss.backward()?;
    let mut out = Vec::new();
    let mut momenta = Vec::new();
    for (p, v) in [(w1, &a[4]), (b1, &a[5]), (w2, &a[6])] {
        let g = p.grad().expect("a parameter gets a gradient");
        let v = v.mul_scalar(0.9)?.add(&g)?;
        out.push(p.detach().sub(&v.mul_scalar(0.05)?)?);
        momenta.push(v);
    }
    out.extend(momenta);
    out.push(loss.detach());
    Ok(out)
}

#[derive(Debug, Clone)]
struct Case {
    batches: Vec<RefTensor>,
    w1: RefTensor,
    b1: RefTensor,
    w2: RefTensor,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..24, 1usize..12, 1usize..16, 1usize..8, 2usize..5).prop_flat_map(
        |(n, d, h, o, steps)| {
            (
                prop::collection::vec(tensor_of(vec![n, d]), steps),
                tensor_of(vec![d, h]),
                tensor_of(vec![h]),
                tensor_of(vec![h, o]),
            )
                .prop_map(|(batches, w1, b1, w2)| Case {
                    batches,
                    w1,
                    b1,
                    w2,
                })
        },
    )
}

/// The inputs of the first step: parameters that require gradients, zero momenta.
fn start(c: &Case) -> Vec<Tensor> {
    let p = [&c.w1, &c.b1, &c.w2].map(|t| gpu(t).requires_grad());
    let v = [&c.w1, &c.b1, &c.w2].map(|t| Tensor::zeros(&t.shape).unwrap());
    p.into_iter().chain(v).collect()
}

fn bits(ts: &[Tensor]) -> Vec<Vec<u32>> {
    ts.iter()
        .map(|t| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// The next step's inputs from a step's outputs (parameters require gradients again).
fn carry(out: &[Tensor]) -> Vec<Tensor> {
    out[..3]
        .iter()
        .map(|p| p.requires_grad())
        .chain(out[3..6].iter().cloned())
        .collect()
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn replayed_steps_equal_steps_run_again(c in case()) {
        let _t = turn();
        // Run again: the step's code at every step.
        let mut state = start(&c);
        let mut eager = Vec::new();
        for b in &c.batches {
            let mut inputs = vec![gpu(b)];
            inputs.extend(state.iter().cloned());
            let out = step(&inputs).unwrap();
            eager.push(bits(&out));
            state = carry(&out);
        }
        // Recorded at the first step, replayed at the others.
        let state = start(&c);
        let mut inputs = vec![gpu(&c.batches[0])];
        inputs.extend(state.iter().cloned());
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let (mut replay, mut out) = Replay::record(&refs, step).unwrap();
        prop_assert_eq!(bits(&out), eager[0].clone(), "the recording step");
        for (k, b) in c.batches.iter().enumerate().skip(1) {
            let mut inputs = vec![gpu(b)];
            inputs.extend(carry(&out));
            let refs: Vec<&Tensor> = inputs.iter().collect();
            out = replay.run(&refs).unwrap();
            prop_assert_eq!(bits(&out), eager[k].clone(), "replay {}", k);
        }
    }
}

/// A random DAG as a step: its last node, a reduction of it (taken while it is pending), the
/// probed node, and the leaves' gradients of sum(last × a fixed probe) (zeros where none).
fn dag_step(d: &Dag, leaves: &[Tensor]) -> vkgrad::Result<Vec<Tensor>> {
    let vals = d.eval(leaves)?;
    let last = vals.last().expect("one node at least").clone();
    let axis = (d.reduce_axis < last.rank()).then_some(d.reduce_axis);
    let extent = axis.map_or(last.numel(), |a| last.shape()[a]);
    let op = &REDUCE_OPS[if extent == 0 {
        0
    } else {
        d.reduce_op % REDUCE_OPS.len()
    }];
    let reduced = match axis {
        Some(a) => (op.axis)(&last, a as isize, false)?,
        None => (op.all)(&last)?,
    };
    let probed = vals[d.first_node() + d.probe_at % d.nodes.len()].clone();
    if last.is_requires_grad() {
        let w = gpu(&probe(last.shape(), 0.3));
        last.mul(&w)?.sum_all()?.backward()?;
    }
    let mut out = vec![last.detach(), reduced.detach(), probed.detach()];
    for x in leaves {
        out.push(match x.grad() {
            Some(g) => g,
            None => Tensor::zeros(x.shape())?,
        });
    }
    Ok(out)
}

/// Equal bit for bit; any NaN equals any NaN (payloads are not specified).
fn same(what: &str, a: &[Vec<u32>], b: &[Vec<u32>]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        let nan = |v: u32| f32::from_bits(v).is_nan();
        let ok = x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p == q || (nan(*p) && nan(*q)));
        prop_assert!(ok, "{}: output {}: {:?} vs {:?}", what, k, x, y);
    }
    Ok(())
}

fn dag_and_new_leaves() -> impl Strategy<Value = (Dag, Vec<RefTensor>)> {
    dag().prop_flat_map(|d| {
        let again: Vec<_> = d.inputs().iter().map(|l| leaf(l.shape.clone())).collect();
        (Just(d), again)
    })
}

proptest! {
    #![proptest_config(config(24))]

    /// Random DAGs (special values, broadcasting, shared inputs, a reduction of a pending
    /// value, gradients) recorded on one set of leaves and replayed on another.
    #[test]
    fn replayed_dags_equal_dags_run_again((d, again) in dag_and_new_leaves()) {
        let _t = turn();
        let up = |ls: &[RefTensor]| -> Vec<Tensor> { ls.iter().map(|t| gpu(t).requires_grad()).collect() };
        let eager_a = bits(&dag_step(&d, &up(&d.inputs())).unwrap());
        let eager_b = bits(&dag_step(&d, &up(&again)).unwrap());
        let a = up(&d.inputs());
        let refs: Vec<&Tensor> = a.iter().collect();
        let (mut replay, first) = Replay::record(&refs, |xs| dag_step(&d, xs)).unwrap();
        same("the recording run", &bits(&first), &eager_a)?;
        let b = up(&again);
        let refs: Vec<&Tensor> = b.iter().collect();
        same("the replay", &bits(&replay.run(&refs).unwrap()), &eager_b)?;
    }
}

#[test]
fn inputs_and_outputs_keep_their_values() {
    let _t = turn();
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    let double = |a: &[Tensor]| Ok(vec![a[0].mul_scalar(2.0)?]);
    let (mut r, first) = Replay::record(&[&x], double).unwrap();
    let y = Tensor::from_vec(vec![10.0, 20.0, 30.0], &[3]).unwrap();
    let second = r.run(&[&y]).unwrap();
    assert_eq!(second[0].to_vec().unwrap(), [20.0, 40.0, 60.0]);
    // Neither the caller's inputs nor an earlier output changed.
    assert_eq!(x.to_vec().unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(y.to_vec().unwrap(), [10.0, 20.0, 30.0]);
    assert_eq!(first[0].to_vec().unwrap(), [2.0, 4.0, 6.0]);
    assert!(r.commands() >= 1);
    // Dropping the recording right after a run (its outputs' copies not yet run) frees
    // nothing the device still uses: the outputs read back whole.
    let third = r.run(&[&x]).unwrap();
    drop(r);
    let z = Tensor::from_vec(vec![7.0; 3], &[3])
        .unwrap()
        .mul_scalar(1.0)
        .unwrap();
    assert_eq!(third[0].to_vec().unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(z.to_vec().unwrap(), [7.0; 3]);
}

#[test]
fn what_a_recording_may_not_do_is_an_error() {
    let _t = turn();
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    let e = Replay::record(&[&x], |a| {
        let s = a[0].sum_all()?.to_vec()?;
        Ok(vec![a[0].mul_scalar(s[0])?])
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("recorded for replay") && e.contains("read"),
        "{e}"
    );
    let e = Replay::record(&[&x], |a| {
        let noise = Rng::new(1).uniform(&[2], 0.0, 1.0)?;
        Ok(vec![a[0].add(&noise)?])
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("random") && e.contains("inputs"), "{e}");
    // The device records and runs as before after a failed recording.
    assert_eq!(x.mul_scalar(3.0).unwrap().to_vec().unwrap(), [3.0, 6.0]);
    let (mut r, _) = Replay::record(&[&x], |a| Ok(vec![a[0].exp()?])).unwrap();
    let e = r
        .run(&[&Tensor::zeros(&[3]).unwrap()])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("input 0 has shape [3]") && e.contains("[2]"),
        "{e}"
    );
    let e = r.run(&[]).err().unwrap().to_string();
    assert!(
        e.contains("recorded with 1 inputs and 0 integer inputs, got 0 and 0"),
        "{e}"
    );
}

#[test]
fn a_refused_step_says_it_cannot_be_replayed_however_its_error_is_wrapped() {
    let _t = turn();
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    // As a plugin passes a host error on: as text, in another variant.
    let r = Replay::record(&[&x], |a| {
        let s = a[0]
            .sum_all()?
            .item()
            .map_err(|e| vkgrad::Error::Other(format!("plugin: {e}")))?;
        Ok(vec![a[0].mul_scalar(s)?])
    });
    assert!(
        matches!(r, Err(vkgrad::Error::NotReplayable(ref why)) if why.contains("read")),
        "{:?}",
        r.err()
    );
    // A step that fails for its own reasons keeps its error.
    let r = Replay::record(&[&x], |a| Ok(vec![a[0].reshape(&[3])?]));
    assert!(matches!(r, Err(vkgrad::Error::Op { .. })), "{:?}", r.err());
}

#[test]
fn integer_inputs_are_replayed_with_new_values_and_never_read_on_the_host() {
    let _t = turn();
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    let ids = |v: Vec<u32>| IntTensor::from_vec(v, &[3]).unwrap();
    // x + labels as f32, on the device.
    let step = |a: &[Tensor], i: &[IntTensor]| Ok(vec![a[0].add(&i[0].to_f32()?)?]);
    let (mut r, first) = Replay::record_with_ints(&[&x], &[&ids(vec![1, 2, 3])], step).unwrap();
    assert_eq!(first[0].to_vec().unwrap(), [2.0, 4.0, 6.0]);
    let again = r.run_with_ints(&[&x], &[&ids(vec![10, 0, 7])]).unwrap();
    assert_eq!(again[0].to_vec().unwrap(), [11.0, 2.0, 10.0]);
    // The recording's copy of the labels has no host values: using them on the host reads
    // them back, which is refused (rather than baking this step's labels into the recording).
    let r = Replay::record_with_ints(&[&x], &[&ids(vec![1, 2, 3])], |a, i| {
        let host = i[0].to_vec()?;
        Ok(vec![a[0].add_scalar(host[0] as f32)?])
    });
    assert!(
        matches!(r, Err(vkgrad::Error::NotReplayable(_))),
        "{:?}",
        r.err()
    );
}

/// Random draws inside a recording whose seed is a device value (how `vkgrad train` records
/// its augmentation): each replay draws the numbers of the seed written before it, the same
/// bits as drawing them op by op with that seed; a seed that is not one of the step's device
/// seeds is still refused.
#[test]
fn draws_with_a_device_seed_follow_the_seed_written_before_each_replay() {
    let _t = turn();
    let x = Tensor::from_vec(vec![0.5; 6], &[2, 3]).unwrap();
    // Two draws of one seed (offsets 0 and 1) and one of another, as two augmented views.
    let draws = |x: &Tensor, s1: u64, s2: u64| -> vkgrad::Result<Vec<Tensor>> {
        let mut a = Rng::new(s1);
        let u = a.uniform(&[2, 3], -1.0, 1.0)?;
        let n = a.normal(&[2, 3], 0.0, 2.0)?;
        let v = Rng::new(s2).uniform(&[2, 3], 0.0, 1.0)?;
        Ok(vec![x.add(&u)?.mul(&n)?, x.mul(&v)?])
    };
    let seeds = [(11u64, 12u64), (u64::MAX - 3, 1 << 40), (0, 7), (11, 12)];
    let t = |s: u64| vkgrad::seed_tensor(s).unwrap();
    let (s1, s2) = seeds[0];
    let (mut r, first) = Replay::record_with_ints(&[&x], &[&t(s1), &t(s2)], |a, i| {
        vkgrad::with_device_seeds(&[(s1, &i[0]), (s2, &i[1])], || draws(&a[0], s1, s2))
    })
    .unwrap();
    assert_eq!(bits(&first), bits(&draws(&x, s1, s2).unwrap()));
    for &(s1, s2) in &seeds[1..] {
        let got = r.run_with_ints(&[&x], &[&t(s1), &t(s2)]).unwrap();
        assert_eq!(bits(&got), bits(&draws(&x, s1, s2).unwrap()), "{s1} {s2}");
    }
    // A draw of a seed that is not a device value would be baked in: refused.
    let r = Replay::record_with_ints(&[&x], &[&t(1)], |a, i| {
        vkgrad::with_device_seeds(&[(1, &i[0])], || draws(&a[0], 1, 2))
    });
    assert!(
        matches!(r, Err(vkgrad::Error::NotReplayable(ref why)) if why.contains("random")),
        "{:?}",
        r.err()
    );
    // Two device values for one seed: which one a draw stands for is undecidable.
    let e = vkgrad::with_device_seeds(&[(5, &t(5)), (5, &t(5))], || Ok(()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not distinct"), "{e}");
}

#[test]
fn device_work_on_another_thread_waits_for_a_recording_to_end() {
    let _t = turn();
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let step_done = Arc::new(AtomicBool::new(false));
    let (started, wait_start) = mpsc::channel::<()>();
    let other = {
        let step_done = step_done.clone();
        std::thread::spawn(move || {
            wait_start.recv().unwrap();
            // Uploaded, computed and read back while the main thread is recording: none of it
            // may land in the recording, so it runs once the recording has ended.
            let v = Tensor::from_vec(vec![1.0, 2.0], &[2])
                .and_then(|a| a.add_scalar(1.0))
                .and_then(|a| a.to_vec());
            (v, step_done.load(Ordering::SeqCst))
        })
    };
    let x = Tensor::from_vec(vec![3.0, 4.0], &[2]).unwrap();
    let (mut r, first) = Replay::record(&[&x], |a| {
        let y = a[0].mul_scalar(2.0)?;
        started.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let z = y.add_scalar(1.0)?;
        step_done.store(true, Ordering::SeqCst);
        Ok(vec![z])
    })
    .unwrap();
    let (v, after_the_recording) = other.join().unwrap();
    assert_eq!(v.unwrap(), [2.0, 3.0]);
    assert!(
        after_the_recording,
        "the other thread ran during the recording"
    );
    assert_eq!(first[0].to_vec().unwrap(), [7.0, 9.0]);
    let again = r
        .run(&[&Tensor::from_vec(vec![1.0, 0.0], &[2]).unwrap()])
        .unwrap();
    assert_eq!(again[0].to_vec().unwrap(), [3.0, 1.0]);
}

#[test]
fn a_step_that_panics_while_recording_leaves_the_device_to_everyone() {
    let _t = turn();
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Replay::record(&[&x], |a| -> vkgrad::Result<Vec<Tensor>> {
            a[0].exp()?.realize()?;
            panic!("a step panics while it is recorded");
        })
    }));
    assert!(panicked.is_err());
    // Another thread's work would wait forever if the recording had not ended.
    let v = std::thread::spawn(|| {
        Tensor::from_vec(vec![5.0], &[1])
            .and_then(|a| a.mul_scalar(2.0))
            .and_then(|a| a.to_vec())
    })
    .join()
    .unwrap();
    assert_eq!(v.unwrap(), [10.0]);
    assert_eq!(x.mul_scalar(3.0).unwrap().to_vec().unwrap(), [3.0, 6.0]);
}

#[test]
fn a_recording_reuses_the_buffers_it_drops_but_never_one_holding_a_value_from_before_it() {
    let _t = turn();
    let ctx = vkgrad::device::context().unwrap();
    // A chain of 40 same-sized values, each dropped once the next is computed: recorded, it
    // needs a few buffers, as the chain run op by op does, not one per value.
    let x = Tensor::from_vec((0..4096).map(|i| i as f32).collect(), &[4096]).unwrap();
    let chain = |a: &[Tensor]| -> vkgrad::Result<Vec<Tensor>> {
        let mut v = a[0].clone();
        for _ in 0..40 {
            v = v.mul_scalar(0.5)?.add_scalar(1.0)?;
            v.realize()?;
        }
        Ok(vec![v])
    };
    // Warm the pool with the chain's sizes, then count what the recording creates.
    chain(std::slice::from_ref(&x)).unwrap();
    ctx.sync().unwrap();
    let before = ctx.buffers_created();
    let (mut r, first) = Replay::record(&[&x], chain).unwrap();
    let created = ctx.buffers_created() - before;
    assert!(
        created < 10,
        "{created} buffers created to record a chain of 40"
    );
    let eager = chain(std::slice::from_ref(&x)).unwrap();
    assert_eq!(first[0].to_vec().unwrap(), eager[0].to_vec().unwrap());
    let y = Tensor::from_vec(vec![3.0; 4096], &[4096]).unwrap();
    let again = r.run(&[&y]).unwrap();
    let eager = chain(std::slice::from_ref(&y)).unwrap();
    assert_eq!(again[0].to_vec().unwrap(), eager[0].to_vec().unwrap());

    // A constant made before the recording and dropped inside it keeps its value for every
    // replay: its buffer is not handed to a later value of the recording.
    let mut constant = Some(Tensor::from_vec(vec![5.0; 4096], &[4096]).unwrap());
    let (mut r, first) = Replay::record(&[&x], |a| {
        let c = constant.take().expect("recorded once");
        let y = a[0].add(&c)?;
        y.realize()?;
        drop(c);
        let z = y.mul_scalar(2.0)?;
        z.realize()?;
        Ok(vec![z])
    })
    .unwrap();
    let want = |v: &Tensor| -> Vec<f32> {
        v.to_vec()
            .unwrap()
            .iter()
            .map(|&e| (e + 5.0) * 2.0)
            .collect()
    };
    assert_eq!(first[0].to_vec().unwrap(), want(&x));
    for _ in 0..2 {
        assert_eq!(r.run(&[&y]).unwrap()[0].to_vec().unwrap(), want(&y));
    }
}
