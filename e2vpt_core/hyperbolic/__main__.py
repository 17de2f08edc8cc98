"""`python -m e2vpt_core.hyperbolic`: compile UMAP's kernels into numba's on-disk cache once,
so the first Poincaré view of every later process starts at once (`make setup` runs it)."""

from .projection import warm_up

if __name__ == "__main__":
    print(f"UMAP kernels compiled and cached in {warm_up():.1f} s")
