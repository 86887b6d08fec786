"""Checkpoints: bit-exact sharded save/restore over 8 CPU devices, keep limit, resume resolution, async."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fvjax.training import optim
from fvjax.training.checkpoint import Checkpointer, checkpoint_root, describe_no_checkpoint, resolve_resume
from fvjax.errors import UserError


def _mesh():
    assert len(jax.devices()) == 8
    return Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tp"))


_TX = optim.build_optimizer(optim.OptimizerConfig(learning_rate=1e-3, max_grad_norm=1.0))


@jax.jit
def _one_adamw_step(params):
    opt_state = _TX.init(params)
    updates, opt_state = _TX.update(jax.tree.map(lambda p: jnp.full_like(p, 0.1), params), opt_state, params)
    return opt_state, optax.apply_updates(params, updates)


def _state(mesh, seed=0):
    """A role-like state: params sharded over both axes, AdamW state, EMA, step; bf16 and f32 leaves."""
    rng = np.random.default_rng(seed)
    params = {"blocks": {"kernel": rng.standard_normal((2, 8, 16), dtype=np.float32),
                         "scale": rng.standard_normal((2, 16), dtype=np.float32).astype(jnp.bfloat16)},
              "bias": np.arange(6, dtype=np.float32)}
    specs = {"blocks": {"kernel": P(None, "fsdp", "tp"), "scale": P(None, "fsdp")}, "bias": P()}
    params = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs)
    opt_state, params = _one_adamw_step(params)  # non-trivial moments and count
    return {"student": {"params": params, "opt_state": opt_state, "ema": optim.ema_init(params),
                        "step": jax.device_put(np.int32(1))}}


def _assert_bit_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(x)).view(np.uint8), np.atleast_1d(np.asarray(y)).view(np.uint8))


def test_sharded_state_round_trips_bit_exactly_onto_given_shardings(tmp_path):
    mesh = _mesh()
    state = _state(mesh)
    with Checkpointer.for_output_dir(tmp_path, interval_steps=5, total_limit=0) as ckpt:
        assert ckpt.save(5, state, data_state={"next_step": 6}, recipe_text="recipe: {}\n", metadata={"run": "t"})
        assert not ckpt.save(5, state)  # idempotent: a final save at a saved step writes nothing
    assert os.path.isdir(os.path.join(checkpoint_root(tmp_path), "5", "state"))

    # Restore onto a different layout (everything sharded over fsdp only) from abstract targets.
    def target(x):
        spec = P("fsdp") if x.ndim and x.shape[0] % 4 == 0 else P()
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))

    abstract = jax.tree.map(target, state)
    restored = Checkpointer.for_output_dir(tmp_path, read_only=True).restore(5, abstract)
    _assert_bit_equal(restored.state, state)
    for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(abstract)):
        assert got.sharding == want.sharding
    assert restored.data_state == {"next_step": 6}
    assert restored.recipe_text == "recipe: {}\n" and restored.metadata["run"] == "t" and restored.step == 5


def test_interval_keep_limit_and_latest(tmp_path):
    mesh = _mesh()
    ckpt = Checkpointer.for_output_dir(tmp_path, interval_steps=2, total_limit=2)
    assert [s for s in range(1, 8) if ckpt.should_save(s)] == [2, 4, 6]
    assert resolve_resume("latest", tmp_path) is None
    assert "starting from scratch" in describe_no_checkpoint(tmp_path)
    states = {}
    for step in (2, 4, 6):
        states[step] = _state(mesh, seed=step)
        ckpt.save(step, states[step], data_state={"next_step": step})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [4, 6]  # checkpoints_total_limit = 2
    ckpt.close()

    point = resolve_resume("latest", tmp_path)
    assert point.step == 6 and point.root == checkpoint_root(tmp_path)
    assert resolve_resume(str(tmp_path), None).step == 6                       # an output_dir
    assert resolve_resume(checkpoint_root(tmp_path), None).step == 6           # a checkpoints dir
    assert resolve_resume(os.path.join(checkpoint_root(tmp_path), "4")).step == 4  # a step dir
    assert resolve_resume("", tmp_path) is None

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), states[4])
    _assert_bit_equal(Checkpointer(point.root, read_only=True).restore(4, abstract).state, states[4])


def test_unfinalized_and_missing_checkpoints_are_not_trusted(tmp_path):
    mesh = _mesh()
    with Checkpointer.for_output_dir(tmp_path) as ckpt:
        ckpt.save(3, _state(mesh))
    root = checkpoint_root(tmp_path)
    # A save killed half-way leaves only a temporary directory: it is neither listed nor resumed from.
    shutil.copytree(os.path.join(root, "3"), os.path.join(root, "9.orbax-checkpoint-tmp-123"))
    assert resolve_resume("latest", tmp_path).step == 3
    assert Checkpointer(root, read_only=True).all_steps() == [3]
    with pytest.raises(UserError, match="not a finalized checkpoint"):
        resolve_resume(os.path.join(root, "9.orbax-checkpoint-tmp-123"))
    with pytest.raises(UserError, match="does not exist"):
        resolve_resume(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--resume-from-checkpoint: no finalized checkpoint"):
        resolve_resume(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no finalized checkpoint 7"):
        Checkpointer(root, read_only=True).restore(7)


def test_async_save_lets_the_caller_reuse_and_donate_its_buffers(tmp_path):
    mesh = _mesh()
    state = _state(mesh)
    expected = jax.tree.map(np.asarray, state)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
    with Checkpointer.for_output_dir(tmp_path, async_save=True) as ckpt:
        ckpt.save(1, state)
        state = bump(state)  # donates the saved buffers while the write may still be running
        ckpt.save(2, state)
    reader = Checkpointer.for_output_dir(tmp_path, read_only=True)
    _assert_bit_equal(reader.restore(1, abstract).state, expected)
    # Without a target the tree comes back as saved (plain containers), e.g. for inspection or export.
    raw = reader.restore(1).state
    for got, want in zip(jax.tree.leaves(raw), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), want)
