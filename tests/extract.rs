//! The extraction engine on toy models whose every output is hand arithmetic: one row per item
//! in input order, padding that changes nothing, outputs without a batch axis, layers that fire
//! twice, and forwards that stop after the last selected layer.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::sync::atomic::{AtomicUsize, Ordering};

use hooks::{ActivationStore, BatchForward, Error, Extractor, HookPoint, Hookable, Item, Pool, Repeats, Result};
use tch::{Kind, Tensor};

/// A masked toy transformer over ids `[B, T]`, as floats:
///
/// - `embed`: the id, `[B, T, 1]`;
/// - `position`: the position index, `[1, T, 1]` (no batch axis, like BERT's position embeddings);
/// - `mix`: at every position, the sum of the sample's real ids (its "attention" over the real
///   tokens, masked), `[B, T, 1]`;
/// - `shared`: one module applied twice, to `embed` and then to `mix` (each call doubles its
///   input), `[B, T, 1]`;
/// - `last`: `mix` + `position`, `[B, T, 1]`.
///
/// `runs` counts how far each forward got: +1 on reaching `mix`, +100 on reaching `last`.
#[derive(Debug, Hookable)]
struct Toy {
    embed: HookPoint,
    position: HookPoint,
    mix: HookPoint,
    shared: HookPoint,
    last: HookPoint,
    #[hook(skip)]
    runs: AtomicUsize,
}

impl Toy {
    fn new() -> Self {
        Toy {
            embed: HookPoint::new(),
            position: HookPoint::new(),
            mix: HookPoint::new(),
            shared: HookPoint::new(),
            last: HookPoint::new(),
            runs: AtomicUsize::new(0),
        }
    }
}

impl BatchForward for Toy {
    fn forward_batch(&self, ids: &Tensor, mask: &Tensor) -> Result<()> {
        let width = ids.size()[1];
        let x = self.embed.apply(ids.to_kind(Kind::Float).unsqueeze(-1));
        let position = self
            .position
            .apply(Tensor::arange(width, (Kind::Float, ids.device())).view([1, width, 1]));
        let _ = self.shared.apply(&x * 2.0);
        self.runs.fetch_add(1, Ordering::SeqCst);
        let real = mask.to_kind(Kind::Float).unsqueeze(-1);
        let sum = (&x * &real).sum_dim_intlist(1, true, Kind::Float);
        let mix = self.mix.apply(sum.expand([-1, width, 1], false).contiguous());
        let _ = self.shared.apply(&mix * 2.0);
        self.runs.fetch_add(100, Ordering::SeqCst);
        let _ = self.last.apply(&mix + position);
        Ok(())
    }

    fn pad_id(&self) -> Option<i64> {
        // Not 0, so that a pad attended anywhere would show in `mix`.
        Some(1000)
    }
}

/// Items of lengths 2, 4, 1, 3, 4 in no order.
fn items() -> Vec<Item> {
    vec![
        Item::new([1, 2]),
        Item::new([3, 4, 5, 6]),
        Item::new([7]),
        Item::new([8, 9, 10]),
        Item::new([11, 12, 13, 14]),
    ]
}

fn floats(values: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values).view(shape)
}

#[test]
fn rows_follow_input_order_with_padding_unattended_and_zeroed_however_batched() {
    let toy = Toy::new();
    for batch_size in [1, 2, 3, 5] {
        let out = Extractor::new()
            .batch_size(batch_size)
            .run(&toy, &["embed", "position", "last"], &items())
            .unwrap();
        // The ids, then zeros: padding positions never show what the model computed there.
        let embed = floats(
            &[
                1., 2., 0., 0., 3., 4., 5., 6., 7., 0., 0., 0., 8., 9., 10., 0., 11., 12., 13., 14.,
            ],
            &[5, 4, 1],
        );
        assert_eq!(out.activations.get("embed").unwrap(), &embed, "batch {batch_size}");
        // `[1, T, 1]` broadcast to one row per item.
        let position = floats(
            &[
                0., 1., 0., 0., 0., 1., 2., 3., 0., 0., 0., 0., 0., 1., 2., 0., 0., 1., 2., 3.,
            ],
            &[5, 4, 1],
        );
        assert_eq!(
            out.activations.get("position").unwrap(),
            &position,
            "batch {batch_size}"
        );
        // Sums of real ids only (3, 18, 7, 27, 50) plus the position: the pad id 1000 is unseen.
        let last = floats(
            &[
                3., 4., 0., 0., 18., 19., 20., 21., 7., 0., 0., 0., 27., 28., 29., 0., 50., 51., 52., 53.,
            ],
            &[5, 4, 1],
        );
        assert_eq!(out.activations.get("last").unwrap(), &last, "batch {batch_size}");
        let mask = floats(
            &[
                1., 1., 0., 0., 1., 1., 1., 1., 1., 0., 0., 0., 1., 1., 1., 0., 1., 1., 1., 1.,
            ],
            &[5, 4],
        );
        assert_eq!(out.attention_mask.to_kind(Kind::Float), mask);
        assert_eq!(
            out.input_ids.int64_value(&[0, 2]),
            1000,
            "padded with the model's pad id"
        );
    }
}

#[test]
fn pooling_uses_each_items_real_tokens() {
    let toy = Toy::new();
    let run = |pool| {
        let out = Extractor::new()
            .batch_size(2)
            .pool(pool)
            .run(&toy, &["embed", "position"], &items())
            .unwrap();
        (
            out.activations.get("embed").unwrap().shallow_clone(),
            out.activations.get("position").unwrap().shallow_clone(),
        )
    };
    let col = |v: &[f32]| floats(v, &[5, 1]);
    let (embed, position) = run(Pool::Mean);
    assert_eq!(embed, col(&[1.5, 4.5, 7., 9., 12.5]));
    assert_eq!(position, col(&[0.5, 1.5, 0., 1., 1.5]));
    assert_eq!(run(Pool::First).0, col(&[1., 3., 7., 8., 11.]));
    assert_eq!(run(Pool::Last).0, col(&[2., 6., 7., 10., 14.]));
    assert_eq!(run(Pool::Max).1, col(&[1., 3., 0., 2., 3.]));
}

#[test]
fn a_layer_that_fires_twice_is_refused_unless_told_which_call_to_keep() {
    let toy = Toy::new();
    let err = Extractor::new().run(&toy, &["shared"], &items()).unwrap_err();
    assert!(matches!(err, Error::FiredMore { times: 2, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "layer `shared` fired 2 times in one forward (a module called more than once); keep every call with `Repeats::Stack` (`--repeats stack`) or the last with `Repeats::Last` (`--repeats last`)"
    );
    // Refused without the early stop's first forward too.
    let err = Extractor::new()
        .stop_early(false)
        .run(&toy, &["shared"], &items())
        .unwrap_err();
    assert!(matches!(err, Error::FiredMore { times: 2, .. }), "{err}");

    let items = [Item::new([1, 2]), Item::new([5])];
    // The second call doubles `mix`: the sum of the ids (3, then 5), at each real position.
    let last = Extractor::new()
        .repeats(Repeats::Last)
        .pool(Pool::Mean)
        .run(&toy, &["shared"], &items)
        .unwrap();
    assert_eq!(last.activations.get("shared").unwrap(), &floats(&[6., 10.], &[2, 1]));
    // Every call, on a new axis after the samples: [2 × mean id, 2 × sum].
    let stack = Extractor::new()
        .repeats(Repeats::Stack)
        .pool(Pool::Mean)
        .batch_size(1)
        .run(&toy, &["shared"], &items)
        .unwrap();
    assert_eq!(
        stack.activations.get("shared").unwrap(),
        &floats(&[3., 6., 10., 10.], &[2, 2, 1])
    );
}

#[test]
fn forwards_stop_after_the_last_selected_layer_with_outputs_unchanged() {
    let toy = Toy::new();
    let full = Extractor::new()
        .stop_early(false)
        .run(&toy, &["embed", "mix"], &items())
        .unwrap();
    assert_eq!(toy.runs.swap(0, Ordering::SeqCst), 101 * full.stats.forwards);

    // Lengths 4 4 3 2 | 1: the last is cut off, shorter than half the batch's width.
    let batches = hooks::length_batches(&[4, 4, 3, 2, 1], 32, None).len();
    assert_eq!(batches, 2);
    assert_eq!(full.stats.forwards, batches);
    let stopped = Extractor::new().run(&toy, &["embed", "mix"], &items()).unwrap();
    // One whole forward (the shortest item alone, counting each layer's outputs), then every
    // batch stops at `mix`: `last` is never reached.
    assert_eq!(stopped.stats.forwards, 1 + batches);
    assert_eq!(toy.runs.swap(0, Ordering::SeqCst), 101 + batches);
    for layer in ["embed", "mix"] {
        assert_eq!(stopped.activations.get(layer), full.activations.get(layer), "{layer}");
    }

    // Selecting the last layer runs everything.
    let _ = Extractor::new().run(&toy, &["embed", "last"], &items()).unwrap();
    assert_eq!(toy.runs.swap(0, Ordering::SeqCst), 101 * (1 + batches));

    // Another enabled store may want the later layers: then nothing stops.
    let other = ActivationStore::new(&toy, ["last"]).unwrap();
    other.enable();
    let _ = Extractor::new().run(&toy, &["embed"], &items()).unwrap();
    assert_eq!(toy.runs.swap(0, Ordering::SeqCst), 101 * (1 + batches));
    // It holds what the last forward gave `last`: the batch of the one-token item.
    assert_eq!(other.get("last").unwrap().size(), [1, 1, 1]);
}

#[test]
fn batches_respect_the_token_budget_and_sort_by_length() {
    let toy = Toy::new();
    let run = |size: usize, tokens: Option<usize>| {
        Extractor::new()
            .batch_size(size)
            .batch_tokens(tokens)
            .stop_early(false)
            .run(&toy, &["embed"], &items())
            .unwrap()
            .stats
    };
    // Longest first, 4 4 | 3 2 | 1: widths 4, 3 and 1.
    let stats = run(2, None);
    assert_eq!((stats.forwards, stats.positions, stats.tokens), (3, 8 + 6 + 1, 14));
    // Budget 8: 4 4 | 3 2 | 1 as well; budget 6: 4 | 4 | 3 2 | 1; budget 2: every item alone.
    assert_eq!(run(5, Some(8)).forwards, 3);
    assert_eq!(run(5, Some(6)).forwards, 4);
    assert_eq!(run(5, Some(2)).positions, 14);
}

#[test]
fn bad_items_and_settings_are_refused_with_their_reason() {
    let toy = Toy::new();
    let err = Extractor::new().run(&toy, &["embed"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the dataset is empty; give extraction at least one item"
    );
    let err = Extractor::new()
        .run(&toy, &["embed"], &[Item::new([1]), Item::new(Vec::new())])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `items`: item 1 has no token ids; drop it or give it at least one"
    );
    let err = Extractor::new()
        .batch_size(0)
        .run(&toy, &["embed"], &items())
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid `batch_size`: must be at least 1");
    let err = Extractor::new().run(&toy, &["embd"], &items()).unwrap_err();
    assert!(err.to_string().contains("did you mean `embed`"), "{err}");

    // Cut to a maximum length, counted.
    let out = Extractor::new()
        .max_length(Some(2))
        .run(&toy, &["embed"], &items())
        .unwrap();
    assert_eq!(out.truncated, 3);
    assert_eq!(out.input_ids.size(), [5, 2]);

    // Items given with their own mask: checked, and their padding dropped.
    assert_eq!(Item::with_mask([5, 6, 0], &[1, 1, 0]).unwrap().ids(), [5, 6]);
    let err = Item::with_mask([0, 5, 6], &[0, 1, 1]).unwrap_err().to_string();
    assert!(err.contains("is left-padded"), "{err}");
    let err = Item::with_mask([5, 6], &[1, 2]).unwrap_err().to_string();
    assert!(err.contains("holds 2"), "{err}");
    let err = Item::with_mask([5, 6], &[0, 0]).unwrap_err().to_string();
    assert_eq!(err, "invalid `attention_mask`: marks no real token; give at least one");
    let err = Item::with_mask([5, 6], &[1]).unwrap_err().to_string();
    assert!(err.contains("1 entries for 2 ids"), "{err}");
}

/// A model whose output has a first dim that is neither the batch nor 1.
#[derive(Debug, Hookable)]
struct Flattens {
    out: HookPoint,
}

impl BatchForward for Flattens {
    fn forward_batch(&self, ids: &Tensor, _mask: &Tensor) -> Result<()> {
        let _ = self.out.apply(ids.to_kind(Kind::Float).view([-1]));
        Ok(())
    }

    fn pad_id(&self) -> Option<i64> {
        Some(0)
    }
}

#[test]
fn an_output_without_one_row_per_sample_is_refused() {
    let model = Flattens { out: HookPoint::new() };
    let err = Extractor::new()
        .run(&model, &["out"], &[Item::new([1, 2]), Item::new([3, 4])])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer `out` gave shape [4] for a batch of 2 samples; extraction needs one row per sample (or one row, broadcast to all), so its first dim must be 2 or 1"
    );
}

/// Windows streamed to a sink and joined give what one in-memory run gives; the interrupt flag
/// stops a run between batches.
#[test]
fn windows_joined_from_a_sink_equal_one_run_and_an_interrupt_stops_it() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let toy = Toy::new();
    let layers = ["embed", "position", "last"];
    let whole = Extractor::new().batch_size(2).run(&toy, &layers, &items()).unwrap();
    for window in [1, 2, 3] {
        let mut sink = hooks::MemorySink::new();
        let report = Extractor::new()
            .batch_size(2)
            .window(window)
            .run_into(&toy, &layers, &items(), 0, &mut sink)
            .unwrap();
        assert_eq!(report.stats.samples, 5);
        let (acts, ids, mask) = sink.into_parts().unwrap();
        for layer in layers {
            assert_eq!(
                acts.get(layer),
                whole.activations.get(layer),
                "window {window}, {layer}"
            );
        }
        assert_eq!(mask, whole.attention_mask, "window {window}");
        assert_eq!(ids.size(), [5, 4]);
    }
    // Resumed after the first two windows of one item each: only the rest is run and handed on.
    let mut sink = hooks::MemorySink::new();
    let report = Extractor::new()
        .window(1)
        .run_into(&toy, &layers, &items(), 2, &mut sink)
        .unwrap();
    assert_eq!(report.stats.samples, 3);
    let err = Extractor::new()
        .window(2)
        .run_into(&toy, &layers, &items(), 1, &mut hooks::MemorySink::new())
        .unwrap_err();
    assert!(err.to_string().contains("not a window boundary"), "{err}");

    let flag = Arc::new(AtomicBool::new(true));
    let err = Extractor::new()
        .interrupt(flag)
        .run(&toy, &layers, &items())
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
}
