// GPT-2 (gpt2.c): one implementation of the model seam (model.h). The in-memory layout of every
// tensor is exactly Hugging Face's GPT-2 layout (Conv1D weights stored [in, out]), stacked over
// layers, so checkpoints load and save with plain copies. Tests index its tensors with P_*.
#pragma once
#include "model.h"

// Parameter tensors in storage order. Shapes (HF names in brackets, i = layer):
//  WTE      [V, C]        transformer.wte.weight
//  WPE      [P, C]        transformer.wpe.weight
//  LN1W/B   [L, C]        transformer.h.i.ln_1.{weight,bias}
//  QKVW     [L, C, 3C]    transformer.h.i.attn.c_attn.weight
//  QKVB     [L, 3C]       transformer.h.i.attn.c_attn.bias
//  ATTPROJW [L, C, C]     transformer.h.i.attn.c_proj.weight
//  ATTPROJB [L, C]        transformer.h.i.attn.c_proj.bias
//  LN2W/B   [L, C]        transformer.h.i.ln_2.{weight,bias}
//  FCW      [L, C, I]     transformer.h.i.mlp.c_fc.weight
//  FCB      [L, I]        transformer.h.i.mlp.c_fc.bias
//  FCPROJW  [L, I, C]     transformer.h.i.mlp.c_proj.weight
//  FCPROJB  [L, C]        transformer.h.i.mlp.c_proj.bias
//  LNFW/B   [C]           transformer.ln_f.{weight,bias}
// The LM head is tied to WTE.
enum {
    P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB,
    GPT2_NUM_TENSORS
};
