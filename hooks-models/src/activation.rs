//! The activation functions of transformers' `ACT2FN` that the reference models support, each
//! computed with the same ops as transformers, so outputs match to rounding.

use std::f64::consts::PI;

use tch::Tensor;

/// An activation function, named as in a transformers `config.json` (`hidden_act`,
/// `activation_function`).
///
/// It holds no parameters, so it is not a layer: like `nn.Dropout`, it has no layer path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `gelu`, `gelu_python`: the exact GELU, `x * Φ(x)` with the error function.
    Gelu,
    /// `gelu_new`: the tanh approximation written out (GPT-2's), as `NewGELUActivation` does.
    GeluNew,
    /// `gelu_pytorch_tanh`: the tanh approximation, libtorch's fused kernel.
    GeluPytorchTanh,
    /// `gelu_fast`: the tanh approximation with transformers' `FastGELUActivation` constants.
    GeluFast,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `relu`.
    Relu,
    /// `silu`, `swish`: `x * sigmoid(x)`.
    Silu,
    /// `tanh`.
    Tanh,
}

impl Activation {
    /// The names [`from_name`](Self::from_name) accepts.
    pub const NAMES: [&'static str; 10] = [
        "gelu",
        "gelu_python",
        "gelu_new",
        "gelu_pytorch_tanh",
        "gelu_fast",
        "quick_gelu",
        "relu",
        "silu",
        "swish",
        "tanh",
    ];

    /// The activation transformers calls `name`, if supported.
    ///
    /// ```
    /// use hooks_models::Activation;
    /// assert_eq!(Activation::from_name("gelu_new"), Some(Activation::GeluNew));
    /// assert_eq!(Activation::from_name("softmax"), None);
    /// ```
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" | "gelu_python" => Activation::Gelu,
            "gelu_new" => Activation::GeluNew,
            "gelu_pytorch_tanh" => Activation::GeluPytorchTanh,
            "gelu_fast" => Activation::GeluFast,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }

    /// Applies the activation elementwise.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluNew => {
                // 0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³))), in transformers' order of ops.
                let inner = (x + x.pow_tensor_scalar(3.0) * 0.044715) * (2.0 / PI).sqrt();
                x * 0.5 * (inner.tanh() + 1.0)
            }
            Activation::GeluPytorchTanh => x.gelu("tanh"),
            Activation::GeluFast => {
                let inner = x * 0.797_884_560_8 * (x * x * 0.044715 + 1.0);
                x * 0.5 * (inner.tanh() + 1.0)
            }
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// Read from a config's activation name (`"gelu"`, ...); an unknown name is an error listing the
/// supported ones.
impl<'de> serde::Deserialize<'de> for Activation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Activation::from_name(&name).ok_or_else(|| {
            let supported: Vec<String> = Activation::NAMES.iter().map(|n| format!("`{n}`")).collect();
            serde::de::Error::custom(format!(
                "unsupported activation `{name}`; supported: {}",
                supported.join(", ")
            ))
        })
    }
}
