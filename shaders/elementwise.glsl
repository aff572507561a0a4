// The elementwise ops, defined once in GLSL: `unary.comp` and `binary.comp` call these with
// their op as a specialisation constant, and the fused kernels that the lazy graph generates at
// run time (engine/src/lazy/codegen.rs) call them with the op as a literal, so an op computes
// the same in both. The op codes are checked against the Rust enums by the engine's tests.

const uint NEG = 0, EXP = 1, LOG = 2, SQRT = 3, RSQRT = 4, ABS = 5, RELU = 6, SIGMOID = 7,
           TANH = 8, POWF = 9, ADD_S = 10, MUL_S = 11, RSUB_S = 12, RDIV_S = 13, MAX_S = 14,
           MIN_S = 15, GT_S = 16, GE_S = 17, EQ_S = 18, STEP = 19, SIGN = 20, DIV_S = 21,
           SIN = 22, COS = 23;

// GLSL leaves pow(x, y) undefined for x < 0 and for x = 0, y <= 0; define it like C's powf.
float powf_c(float v, float e) {
    if (e == 0.0) return 1.0;
    float a = abs(v);
    float r;
    if (a == 0.0) r = e > 0.0 ? 0.0 : uintBitsToFloat(0x7f800000u);
    else if (isinf(a)) r = e > 0.0 ? a : 0.0;
    else r = exp2(e * log2(a));
    if (v < 0.0 || (v == 0.0 && (floatBitsToUint(v) >> 31) == 1u)) {
        if (floor(e) != e) return uintBitsToFloat(0x7fc00000u); // NaN, as powf
        if (mod(e, 2.0) == 1.0) r = -r;                         // odd integer exponent
    }
    return r;
}

float unary_f(uint op, float v, float s) {
    switch (op) {
    case NEG: return -v;
    case EXP: return exp(v);
    case LOG: return log(v);
    case SQRT: return sqrt(v);
    case RSQRT: return 1.0 / sqrt(v);   // inversesqrt() has looser precision on some drivers
    case ABS: return abs(v);
    case RELU: return max(v, 0.0);
    case SIGMOID: return 1.0 / (1.0 + exp(-v));
    // tanh saturates to +-1 in f32 beyond |x| = 9.01; clamping keeps exp-based
    // implementations from computing inf/inf.
    case TANH: return tanh(clamp(v, -15.0, 15.0));
    case POWF: return powf_c(v, s);
    case ADD_S: return v + s;
    case MUL_S: return v * s;
    case RSUB_S: return s - v;
    case RDIV_S: return s / v;
    case MAX_S: return max(v, s);
    case MIN_S: return min(v, s);
    case GT_S: return v > s ? 1.0 : 0.0;
    case GE_S: return v >= s ? 1.0 : 0.0;
    case EQ_S: return v == s ? 1.0 : 0.0;
    case STEP: return v > 0.0 ? 1.0 : 0.0;
    case SIGN: return v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0);
    case DIV_S: return v / s;
    case SIN: return sin(v);
    case COS: return cos(v);
    }
    return v;
}

const uint ADD = 0, SUB = 1, MUL = 2, DIV = 3, MAX = 4, MIN = 5, EQ = 6, GT = 7, GE = 8;

float binary_f(uint op, float u, float v) {
    switch (op) {
    case ADD: return u + v;
    case SUB: return u - v;
    case MUL: return u * v;
    case DIV: return u / v;
    case MAX: return max(u, v);
    case MIN: return min(u, v);
    case EQ: return u == v ? 1.0 : 0.0;
    case GT: return u > v ? 1.0 : 0.0;
    case GE: return u >= v ? 1.0 : 0.0;
    }
    return u;
}
