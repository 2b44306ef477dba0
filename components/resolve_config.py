"""The ``resolve_config`` component: pipeline parameters -> validated ``RunConfig`` JSON.

KFP compiles a component's source text (kfp 2.17 ``dsl/component_factory.py``
``_get_function_source_definition``), so the function is rendered as source from
:mod:`pipelines.parameters` and registered with :mod:`linecache` for :func:`inspect.getsource`.
"""

import linecache
import textwrap
from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Output

from components._image import RFDETR_IMAGE
from pipelines.parameters import CONFIG_INPUTS, REQUIRED, Param, args_section

_SOURCE = '''def resolve_config(
{parameters}
):
    """Resolve the run's training configuration; fails in seconds on a bad value.

    Runs on a CPU pod before any GPU is requested: an unknown option (the error names the
    closest valid one), an invalid value, a knob contradicting an override or an input the
    export, publish or deploy step would refuse (quantize, min_map, names) stops the run here.

{args}        run_config: output; the resolved RunConfig as JSON (model, data, train, eval, log)
    """
    arguments = dict(locals())
    from pipelines.steps.common import step_errors
    from pipelines.steps.config import resolved_knobs, write_run_config

    with step_errors("resolve_config"):
        config = write_run_config(arguments.pop("run_config").path, arguments)
    run_config.metadata.update(resolved_knobs(config))
'''


def _declared(p: Param) -> str:
    annotation = f"Optional[{p.type.__name__}]" if p.default is None else p.type.__name__
    return f"    {p.name}: {annotation}" + ("" if p.default is REQUIRED else f" = {p.default!r}")


_required = [_declared(p) for p in CONFIG_INPUTS if p.default is REQUIRED]
_optional = [_declared(p) for p in CONFIG_INPUTS if p.default is not REQUIRED]
_parameters = [*_required, "    run_config: Output[Artifact]", *_optional]  # no default: 2nd
_source = _SOURCE.format(
    parameters=",\n".join(_parameters) + ",",
    args=textwrap.indent(args_section(CONFIG_INPUTS), "    "),
)
_filename = f"<generated {__name__}.resolve_config>"
linecache.cache[_filename] = (len(_source), None, _source.splitlines(True), _filename)
_namespace = {"__name__": __name__, "Optional": Optional, "Output": Output, "Artifact": Artifact}
exec(compile(_source, _filename, "exec"), _namespace)
resolve_config = dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)(
    _namespace["resolve_config"]
)
