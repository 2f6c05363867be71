# shellcheck shell=bash
# The small-files tree, shared by benches/smallfiles/run.sh and ab.sh. Source it.

# small_tree DIR FILES SEED PER_DIR: FILES files of 1-64 KiB (sizes uniform in whole KiB,
# contents from SEED), PER_DIR per directory d000, d001, ...
small_tree() {
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import os, random, sys
root, files, seed, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
for i in range(files):
    d = os.path.join(root, "d%03d" % (i // per_dir))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(1, 64) * 1024))
PY
}

# tree_digest DIR: one SHA-256 over every file's name and SHA-256 beneath DIR.
tree_digest() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64; }
