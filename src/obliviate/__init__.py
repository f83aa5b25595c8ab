"""obliviate: make a trained classifier forget chosen training data, prove it forgot, keep the rest.

Library use, no CLI needed::

    import obliviate
    data = obliviate.load_data("fashion-mnist")
    model = obliviate.train(data, obliviate.TrainConfig(model="cnn", epochs=3)).model
    unlearned, record = obliviate.unlearn(model, data, obliviate.ForgetRequest.for_classes(3), method="unsir")
    again, _ = obliviate.unlearn(unlearned, data, obliviate.ForgetRequest.for_classes(5), method="unsir")  # 3 stays out
    obliviate.verify("runs/u1").ok   # a saved forget run's certificate still matches its files

Your own model and data: any classifier ``nn.Module`` and tensors (or Datasets); you get your class back::

    net2, record = obliviate.unlearn(net, (x_train, y_train, x_test, y_test), obliviate.ForgetRequest.for_ids(rows),
                                     method="salun")
    run = obliviate.train((x_train, y_train, x_test, y_test), obliviate.TrainConfig(blocks=20), out="runs/b",
                          net=Net())  # block-trained by obliviate: DeepObliviate can then delete from it
"""
from .api import Checkpoint, forget, import_model, load_checkpoint
from .certificate import VerifyResult, history, verify
from .data import DataBundle, DataSpec, ForgetRequest, load_data
from .data.user import from_datasets, from_tensors
from .errors import AccessError, CheckpointError, ObliviateError, RequestError
from .methods import list_methods, unlearn
from .models import ForeignClassifier, build_model, model_for, wrap
from .training import TrainConfig, train
from .verdict import VerdictRule

__version__ = "0.1.0"
__all__ = ["Checkpoint", "forget", "import_model", "load_checkpoint", "from_datasets", "from_tensors",
           "ForeignClassifier", "wrap", "VerifyResult", "history", "verify", "DataBundle", "DataSpec",
           "ForgetRequest", "load_data",
           "AccessError", "CheckpointError", "ObliviateError", "RequestError", "list_methods", "unlearn",
           "build_model", "model_for", "TrainConfig", "train", "VerdictRule", "__version__"]
