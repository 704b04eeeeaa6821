"""The algebraic rewrites of block programs (symsm/ir/block_passes.py): each pass alone on small hand-written
programs and on derived ones — the rewritten program run by the numpy executor equals the original (float64 to
1e-12, float32 to 1e-5), and a hand-written numpy reference; programs without the patterns are left unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import symsm
from symsm.backends.blocks_numpy import BlockKernel
from symsm.derive.structured import derive_structured
from symsm.ir import block_passes as bp
from symsm.ir.blocks import build_block_programs, flops_per_row, parse_program


def _run(program, theta, X, dtype=np.float64):
    k = program.kernel
    if k in ("value_and_grad", "value"):
        return BlockKernel(program.text(), dtype).run(theta, X)
    out = np.empty((X.shape[0],) if k == "per_sample" else X.shape)
    BlockKernel(program.text(), dtype).run(theta, X, **{k: out})
    return out


def _same(a, b, tol):
    a = np.concatenate([np.ravel(v) for v in (a if isinstance(a, tuple) else (a,))])
    b = np.concatenate([np.ravel(v) for v in (b if isinstance(b, tuple) else (b,))])
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (np.abs(b).max() + 1))


def _ops(program, kind):
    return [op for op in program.block if op.kind == kind]


# ---------------------------------------------------------------------------------------------- hand-written
def _header(d, params, arrays):
    lines = ["symsm-blocks 1", "kernel value_and_grad", f"dim {d}", f"params {params}", "rows_per_block 16"]
    return "\n".join(lines + arrays)


def _chain(d: int, k: int) -> str:
    """acc_sum of rowsum((X·Pᵀ·Q)²) and Σ Xᵀ·(X·Pᵀ·Q), with P (k, d), Q (k, d): products of products."""
    return _header(d, 2 * k * d, [
        f"theta P 0 matrix {k} {d}", f"theta Q {k * d} matrix {k} {d}",
        f"array r1 row {k}", f"array r2 row {d}", f"array e3 row {d}", "array r4 rowscalar", "array a5 acc",
        f"array a6 acc {d} {d}",
        "prologue", "block", "matmul r1 X P 1", "matmul r2 r1 Q 0",
        "elementwise e3 = r2", "  e3 mul r2 r2", "end", "rowsum r4 e3", "acc_sum a5 r4", "acc_outer a6 X r2",
        "epilogue", "value a5", "end",
    ])  # fmt: skip


@pytest.mark.parametrize("d", [3, 5, 8])
def test_reassociate_hand_written(d):
    rng = np.random.default_rng(d)
    prog = parse_program(_chain(d, d + 1))
    new = bp.reassociate(prog)
    (mm2,) = [op for op in new.block if op.outs == ("r2",)]
    assert mm2.ins[0] == "X" and [op.kind for op in new.prologue] == ["gemm"]
    theta = rng.normal(size=prog.n_params)
    X = rng.normal(size=(37, d))
    _same(_run(new, theta, X), _run(prog, theta, X), 1e-12)
    _same(_run(new, theta, X, np.float32), _run(prog, theta, X), 1e-5)
    P = theta[: (d + 1) * d].reshape(d + 1, d)
    Q = theta[(d + 1) * d :].reshape(d + 1, d)
    r2 = X @ P.T @ Q
    value, _ = _run(new, theta, X)
    assert value == pytest.approx(np.sum(r2 * r2) / len(X), rel=1e-12)
    # narrower in the middle: (X·Pᵀ)·Q costs less a row than X·(Pᵀ·Q) — left alone
    narrow = parse_program(_chain(d, 2))
    assert bp.reassociate(narrow).block == narrow.block


def _quadratic(d: int) -> str:
    """value = Σ rowsum((Y·A)⊙(Y·C)) with Y = tanh(X), R = Y·(A·Cᵀ) computed too (into an acc_outer)."""
    return _header(d, 2 * d * d, [
        f"theta A 0 matrix {d} {d}", f"theta C {d * d} matrix {d} {d}",
        f"array m0 theta {d} {d}", f"array y1 row {d}", f"array r2 row {d}", f"array r3 row {d}",
        f"array e4 row {d}", "array r5 rowscalar", f"array r6 row {d}", "array a7 acc", f"array a8 acc {d} {d}",
        "prologue", "gemm m0 A C 0 1", "block",
        "elementwise y1 = X", "  y1 call tanh X", "end",
        "matmul r2 y1 A 0", "matmul r3 y1 C 0",
        "elementwise e4 = r2 r3", "  e4 mul r2 r3", "end", "rowsum r5 e4", "matmul r6 y1 m0 0",
        "acc_sum a7 r5", "acc_outer a8 X r6", "epilogue", "value a7", "end",
    ])  # fmt: skip


@pytest.mark.parametrize("d", [3, 4, 7])
def test_quadratic_rowsums_hand_written(d):
    rng = np.random.default_rng(d)
    prog = parse_program(_quadratic(d))
    new = bp.eliminate_dead(bp.quadratic_rowsums(prog))
    assert not any(op.kind == "matmul" and op.outs[0] in ("r2", "r3") for op in new.block)
    assert flops_per_row(new)["matmul"] == flops_per_row(prog)["matmul"] - 4 * d * d
    theta = rng.normal(size=prog.n_params)
    X = rng.normal(size=(41, d))
    _same(_run(new, theta, X), _run(prog, theta, X), 1e-12)
    _same(_run(new, theta, X, np.float32), _run(prog, theta, X), 1e-5)
    A, C = theta[: d * d].reshape(d, d), theta[d * d :].reshape(d, d)
    Y = np.tanh(X)
    assert _run(new, theta, X)[0] == pytest.approx(np.sum((Y @ A) * (Y @ C)) / len(X), rel=1e-12)
    # without the product Y·(A·Cᵀ) in the block: nothing to gain, left alone
    lines = _quadratic(d).replace("acc_outer a8 X r6", "acc_outer a8 X y1").splitlines()
    lone = parse_program("\n".join(ln for ln in lines if "r6" not in ln))
    assert bp.quadratic_rowsums(lone).block == lone.block


def _outer(d: int, m: int, swap: bool, extra: bool) -> str:
    """Σ Yᵀ·(Y·Pᵀ) (or Σ (Y·Pᵀ)ᵀ·Y), Y = sin(X), P (m, d), plus Σ Xᵀ·Y into the same accumulator if `extra`."""
    shape = f"{m} {d}" if swap else f"{d} {m}"
    acc = "acc_outer a3 r2 y1" if swap else "acc_outer a3 y1 r2"
    more = ["acc_outer a3 X X" if m == d else "acc_outer a3 r2 X" if swap else "acc_outer a3 X r2"] if extra else []
    return _header(d, m * d, [
        f"theta P 0 matrix {m} {d}", f"array y1 row {d}", f"array r2 row {m}", f"array a3 acc {shape}",
        f"array u4 theta {shape}", "prologue", "block",
        "elementwise y1 = X", "  y1 call sin X", "end", "matmul r2 y1 P 1", acc, *more,
        "epilogue", "elementwise u4 = a3", "  u4 mul #2.0 a3", "end", "grad P u4" if not swap and m == d else "",
        "end",
    ])  # fmt: skip


@pytest.mark.parametrize("d", [3, 6, 8])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("extra", [False, True])
def test_gram_accumulations_hand_written(d, swap, extra):
    rng = np.random.default_rng(d)
    m = d + 2
    prog = parse_program(_outer(d, m, swap, extra))
    new = bp.eliminate_dead(bp.gram_accumulations(prog))
    (gram,) = _ops(new, "acc_gram")
    assert gram.ins == ("y1",) and len(_ops(new, "acc_outer")) == extra
    assert not _ops(new, "matmul") or (extra and m != d)  # Σ Xᵀ(Y·Pᵀ) still reads the product
    assert new.arrays["a3"].kind == "theta"
    theta = rng.normal(size=prog.n_params)
    X = rng.normal(size=(29, d))
    kern, ref = BlockKernel(new.text()), BlockKernel(prog.text())
    env_new, env_ref = kern.prologue(theta), ref.prologue(theta)
    for k, env in ((kern, env_new), (ref, env_ref)):  # the accumulated sums, through the epilogue
        totals = k.accumulator_rows(env, X).sum(axis=0)
        start = 0
        for name, shape in k.accumulators():
            size = int(np.prod(shape))
            env[name] = totals[start : start + size].reshape(shape)
            start += size
        for op in k.program.epilogue:
            k._theta_op(op, env, np.zeros(k.program.n_params))
    P = theta.reshape(m, d)
    Y = np.sin(X)
    want = Y.T @ (Y @ P.T) if not swap else (Y @ P.T).T @ Y
    if extra:
        want = want + (X.T @ X if m == d else (X.T @ (Y @ P.T) if not swap else (Y @ P.T).T @ X))
    np.testing.assert_allclose(env_new["a3"], want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(env_new["a3"], env_ref["a3"], rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_gram_left_alone_where_it_costs_more():
    # A of width 6, A·Pᵀ of width 3, read by a column sum too: the Gram matrix (42 flops a row) would cost more
    # than the outer product (36), and the product stays
    text = _outer(6, 3, False, False).replace("array u4", "array a5 acc 3\narray u4")
    prog = parse_program(text.replace("acc_outer a3 y1 r2", "acc_outer a3 y1 r2\nacc_colsum a5 r2"))
    assert bp.gram_accumulations(prog) is prog
    # without the column sum the product goes too: 42 < 36 + 36
    assert bp.gram_accumulations(parse_program(_outer(6, 3, False, False))).arrays["a3"].kind == "theta"


def test_eliminate_dead_and_schedule():
    d = 4
    prog = parse_program(_quadratic(d))
    unchanged = bp.eliminate_dead(prog)
    assert unchanged.block == prog.block and unchanged.prologue == prog.prologue
    lines = _quadratic(d).replace("acc_outer a8 X r6", "acc_outer a8 X y1").splitlines()
    dead = parse_program("\n".join(lines))  # r6 and m0 read by nothing
    pruned = bp.eliminate_dead(dead)
    assert "r6" not in pruned.arrays and "m0" not in pruned.arrays and not pruned.prologue
    reordered = list(prog.block)
    rowsum = reordered.pop(reordered.index(_ops(prog, "rowsum")[0]))
    reordered.insert(0, rowsum)  # before its input
    fixed = bp.schedule(replace(prog, block=reordered)).block
    assert fixed.index(rowsum) == prog.block.index(rowsum) and sorted(map(id, fixed)) == sorted(map(id, prog.block))
    assert bp.schedule(prog).block == prog.block


# ---------------------------------------------------------------------------------------------- derived programs
def _models(d: int) -> dict[str, symsm.Model]:
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    V = symsm.param_matrix("V", d, d)
    b = symsm.param_vector("b", d)
    S = symsm.param_symmetric("S", d)
    return {
        "ica": symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name="ica"),
        "ica_bias": symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x + b))), x, [W, b], name="ica_bias"),
        "sqrt": symsm.Model(symsm.sum(-symsm.sqrt(1 + (W @ x) ** 2)), x, [W], name="sqrt"),
        # a sum of two scores: none of the patterns, left as it is
        "two": symsm.Model(
            symsm.sum(-symsm.log(symsm.cosh(W @ x))) + symsm.sum(symsm.atan(V @ x)) / 4 - symsm.sum(x**2) / 2,
            x,
            [W, V],
            name="two",
        ),
        "ica_gauss": symsm.Model(
            symsm.sum(-symsm.log(symsm.cosh(W @ x))) - symsm.sum(x**2) / 2, x, [W], name="ica_gauss"
        ),
        "ica_symmetric": symsm.Model(
            symsm.sum(-symsm.log(symsm.cosh(S @ x))), x, [S], name="ica_symmetric"
        ),  # a symmetric group: ∇ folds A + Aᵀ
        "chain": symsm.Model(symsm.sum(-symsm.log(symsm.cosh(V @ (W @ x)))), x, [W, V], name="chain"),
        "student": symsm.Model(-symsm.sum(symsm.log(1 + (W @ x - b) ** 2)), x, [W, b], name="student"),
    }


@pytest.mark.parametrize("d", [3, 5, 8])
def test_derived_programs_rewritten_equal_the_original(d):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(53, d))
    for name, model in _models(d).items():
        der = derive_structured(model)
        before = build_block_programs(der, model, rewrite=False)
        after = build_block_programs(der, model)
        theta = rng.normal(scale=0.4, size=model.n_params)
        for kernel in before:
            _same(_run(after[kernel], theta, X), _run(before[kernel], theta, X), 1e-12)
            _same(_run(after[kernel], theta, X, np.float32), _run(before[kernel], theta, X), 1e-5)
            assert flops_per_row(after[kernel])["total"] <= flops_per_row(before[kernel])["total"]
        cut = flops_per_row(after["value_and_grad"])["matmul"] < flops_per_row(before["value_and_grad"])["matmul"]
        assert cut == (name != "two"), name


def test_ica_program_rewritten_to_8_d2():
    d = 6
    model = _models(d)["ica"]
    vg = build_block_programs(derive_structured(model), model)["value_and_grad"]
    # r1, r6 = e0·(W·Wᵀ), e7ᵀ·X and the Gram matrix of e0 (one triangle): 7d² + d
    assert flops_per_row(vg)["matmul"] == 7 * d * d + d
    assert sorted(op.kind for op in vg.matmuls()) == ["acc_gram", "acc_outer", "matmul", "matmul"]
    # with a Gaussian term the score is e0·W − X: the products distributed over the difference, the same count
    model = _models(d)["ica_gauss"]
    vg = build_block_programs(derive_structured(model), model)["value_and_grad"]
    assert flops_per_row(vg)["matmul"] == 7 * d * d + d
    # the score kernel keeps its product: the score is its output
    score = build_block_programs(derive_structured(model), model)["score"]
    assert len(_ops(score, "matmul")) == 2


def test_merge_tables_hand_written():
    d = 5
    text = _header(d, d * d, [
        f"theta P 0 matrix {d} {d}", f"array r1 row {d}", f"array e2 row {d}", "array r3 rowscalar",
        f"array e4 row {d}", "array e5 rowscalar", "array a6 acc", f"array a7 acc {d}",
        "prologue", "block", "matmul r1 X P 1",
        "elementwise e2 = r1", "  v0 mul r1 r1", "  e2 add v0 #1.0", "end", "rowsum r3 e2",
        "elementwise e5 = r3", "  e5 call log r3", "end",
        "elementwise e4 = X r1", "  v0 call sin r1", "  e4 mul v0 X", "end",
        "acc_sum a6 e5", "acc_colsum a7 e4", "epilogue", "value a6", "end",
    ])  # fmt: skip
    prog = parse_program(text)
    new = bp.merge_tables(prog)
    tables = _ops(new, "elementwise")
    assert [t.outs for t in tables] == [("e2", "e4"), ("e5",)]  # e4 joins the table that reads r1 first
    assert len({ln.split()[0] for ln in tables[0].table}) == len(tables[0].table)  # temporaries renamed apart
    assert new.block.index(_ops(new, "rowsum")[0]) == new.block.index(tables[0]) + 1
    rng = np.random.default_rng(0)
    theta, X = rng.normal(size=prog.n_params), rng.normal(size=(23, d))
    _same(_run(new, theta, X), _run(prog, theta, X), 1e-12)
    assert bp.merge_tables(new).block == new.block


@pytest.mark.parametrize("d", [5, 33])
def test_llvm_executor_runs_the_rewritten_program_like_the_original(d):
    from symsm.backends.llvm.structured import StructuredKernel

    model = _models(d)["ica_bias"]
    der = derive_structured(model)
    before = build_block_programs(der, model, rewrite=False)["value_and_grad"]
    after = build_block_programs(der, model)["value_and_grad"]
    assert any(op.kind == "acc_gram" for op in after.block)
    rng = np.random.default_rng(d)
    theta, X = rng.normal(scale=0.3, size=model.n_params), rng.normal(size=(1001, d))
    _same(StructuredKernel(after.text()).run(theta, X), _run(before, theta, X), 1e-12)
    _same(StructuredKernel(after.text(), np.float32).run(theta, X), _run(before, theta, X), 1e-5)


def _linear(d: int) -> str:
    """S = Y·Wᵀ − 2X with Y = tanh(X·Wᵀ)·W: rowsum(S⊙S), S·Wᵀ (X·Wᵀ is a product the block has) and Σ Y₀ᵀS."""
    return _header(d, d * d, [
        f"theta W 0 matrix {d} {d}", f"array r1 row {d}", f"array e2 row {d}", f"array r3 row {d}",
        f"array e4 row {d}", f"array e5 row {d}", "array r6 rowscalar", f"array r7 row {d}", "array a8 acc",
        f"array a9 acc {d} {d}", f"array a10 acc {d}", "prologue", "block", "matmul r1 X W 1",
        "elementwise e2 = r1", "  e2 call tanh r1", "end", "matmul r3 e2 W 0",
        "elementwise e4 e5 = X r3", "  v0 mul #2.0 X", "  e4 sub r3 v0", "  e5 mul e4 e4", "end",
        "rowsum r6 e5", "matmul r7 e4 W 1", "acc_sum a8 r6", "acc_outer a9 e2 e4", "acc_colsum a10 r7",
        "epilogue", "value a8", "grad W a9", "end",
    ])  # fmt: skip


@pytest.mark.parametrize("d", [3, 6, 8])
def test_linear_combinations_hand_written(d):
    rng = np.random.default_rng(d)
    prog = parse_program(_linear(d))
    theta, X = rng.normal(scale=0.5, size=prog.n_params), rng.normal(size=(31, d))
    dist = bp.distribute_products(prog)
    (r7,) = [op for op in dist.block if "r7" in op.outs]
    assert r7.kind == "elementwise" and "r1" in r7.ins  # (r3 − 2X)·Wᵀ = r3·Wᵀ − 2·r1
    _same(_run(dist, theta, X), _run(prog, theta, X), 1e-12)
    assoc = bp.reassociate(dist)
    quad = bp.quadratic_rowsums(assoc)  # rowsum(S⊙S) = e2⊙(e2·W·Wᵀ) − 4 e2⊙r1 + 4 X⊙X
    assert "e5" not in next(op for op in quad.block if op.kind == "rowsum").ins
    gram = bp.gram_accumulations(quad)  # Σ e2ᵀ(e2·W) − 2 e2ᵀX
    assert len(_ops(gram, "acc_gram")) == 1 and gram.arrays["a9"].kind == "theta"
    new = bp.eliminate_dead(gram)
    assert "r3" not in new.arrays and flops_per_row(new)["matmul"] == 7 * d * d + d
    for step in (assoc, quad, gram, new, bp.optimize(prog)):
        _same(_run(step, theta, X), _run(prog, theta, X), 1e-12)
        _same(_run(step, theta, X, np.float32), _run(prog, theta, X), 1e-5)
    W = theta.reshape(d, d)
    Y = np.tanh(X @ W.T)
    S = Y @ W - 2 * X
    value, grad = _run(new, theta, X)
    assert value == pytest.approx(np.sum(S * S) / len(X), rel=1e-12)
    np.testing.assert_allclose(grad, (Y.T @ S).ravel() / len(X), rtol=1e-12, atol=1e-12)
