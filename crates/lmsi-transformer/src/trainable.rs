//! The model as lmsi-adamw's [`Trainable`]: its parameter tensors in layout order, and the
//! optimizer's operations carried out by its backend, so the trainer's gradients and moments live
//! on the model's device.

use lmsi_adamw::{StepScalars, TensorInfo, Trainable};

use crate::Error;
use crate::backend::Backend;
use crate::model::Model;
use crate::params::Params;

impl<B: Backend> Trainable for Model<B> {
    type Tensor = B::Buf;
    type Grads = Params<B::Buf>;
    type Error = Error;

    fn tensor_info(&self) -> Vec<TensorInfo> {
        self.layout()
            .tensors()
            .into_iter()
            .map(|spec| TensorInfo::new(spec.name.clone(), spec.shape.clone(), spec.decay))
            .collect()
    }

    fn zero_grads(&self) -> Result<Params<B::Buf>, Error> {
        Model::zero_grads(self)
    }

    fn grad_tensors(grads: &Params<B::Buf>) -> Vec<&B::Buf> {
        grads.tensors()
    }

    fn grad_tensors_mut(grads: &mut Params<B::Buf>) -> Vec<&mut B::Buf> {
        grads.tensors_mut()
    }

    fn upload(&self, values: &[f32]) -> Result<B::Buf, Error> {
        self.backend().upload(values)
    }

    fn numel(&self, tensor: &B::Buf) -> usize {
        self.backend().len(tensor)
    }

    fn download(&self, tensor: &B::Buf) -> Result<Vec<f32>, Error> {
        self.backend().download(tensor)
    }

    fn fill_zero(&self, tensor: &mut B::Buf) -> Result<(), Error> {
        self.backend().zero(tensor)
    }

    fn sum_squares(&self, tensor: &B::Buf) -> Result<f64, Error> {
        self.backend().sum_squares(tensor)
    }

    fn scale(&self, tensor: &mut B::Buf, factor: f32) -> Result<(), Error> {
        self.backend().scale(tensor, factor)
    }

    fn adamw_update(
        &mut self,
        index: usize,
        grad: &B::Buf,
        m: &mut B::Buf,
        v: &mut B::Buf,
        scalars: &StepScalars,
    ) -> Result<(), Error> {
        let (backend, params) = self.backend_and_params_mut();
        let param =
            params.tensors_mut().into_iter().nth(index).ok_or_else(|| {
                Error::Input(format!("the model has no parameter tensor {index}"))
            })?;
        backend.adamw_update(param, grad, m, v, scalars)
    }
}
