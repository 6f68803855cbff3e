// lugha.preprocess in the browser: the same geometry, Pillow's own resampling arithmetic and numpy's
// float32 normalisation, so a photo becomes the same tensor on a phone as on the server. Pillow's
// resize is a separable convolution with fixed-point (22-bit) coefficients and an 8-bit intermediate
// image; it is ported line for line from Pillow's Resample.c (tests compare tensors to 1e-6 on PNGs).

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

const FILTERS = {
  bilinear: { support: 1.0, f: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } },
  bicubic: {
    support: 2.0,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: bounds [xmin, count] and int coefficients per output.
function coeffs(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) { const w = filter.f((x + xmin - center + 0.5) * ss); k[x] = w; ww += w; }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

function clip8(v) {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

// RGB (3 bytes/pixel) resize exactly as Pillow's ImagingResample for BILINEAR/BICUBIC.
function resampleConv(rgb, w, h, ow, oh, filter) {
  const needH = ow !== w, needV = oh !== h;
  const hc = coeffs(w, ow, filter), vc = coeffs(h, oh, filter);
  let src = rgb, sw = w, sh = h, yFirst = 0;
  if (needH) {
    yFirst = needV ? vc.bounds[0] : 0;
    const yLast = needV ? vc.bounds[oh * 2 - 2] + vc.bounds[oh * 2 - 1] : h;
    const rows = yLast - yFirst;
    const tmp = new Uint8Array(ow * rows * 3);
    for (let yy = 0; yy < rows; yy++) {
      const rowIn = (yy + yFirst) * w * 3;
      for (let xx = 0; xx < ow; xx++) {
        const xmin = hc.bounds[xx * 2], xmax = hc.bounds[xx * 2 + 1], kb = xx * hc.ksize;
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const kv = hc.kk[kb + x], p = rowIn + (x + xmin) * 3;
          s0 += rgb[p] * kv; s1 += rgb[p + 1] * kv; s2 += rgb[p + 2] * kv;
        }
        const o = (yy * ow + xx) * 3;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp; sw = ow; sh = rows;
  }
  if (!needV) return src;
  const out = new Uint8Array(sw * oh * 3);
  for (let yy = 0; yy < oh; yy++) {
    const ymin = vc.bounds[yy * 2] - (needH ? yFirst : 0), ymax = vc.bounds[yy * 2 + 1], kb = yy * vc.ksize;
    for (let xx = 0; xx < sw; xx++) {
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const kv = vc.kk[kb + y], p = ((y + ymin) * sw + xx) * 3;
        s0 += src[p] * kv; s1 += src[p + 1] * kv; s2 += src[p + 2] * kv;
      }
      const o = (yy * sw + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return out;
}

// Pillow's NEAREST resize is an affine transform sampling pixel centres.
function resampleNearest(rgb, w, h, ow, oh) {
  const out = new Uint8Array(ow * oh * 3), sx = w / ow, sy = h / oh;
  for (let y = 0; y < oh; y++) {
    const yi = Math.min(h - 1, Math.floor((y + 0.5) * sy));
    for (let x = 0; x < ow; x++) {
      const xi = Math.min(w - 1, Math.floor((x + 0.5) * sx)), p = (yi * w + xi) * 3, o = (y * ow + x) * 3;
      out[o] = rgb[p]; out[o + 1] = rgb[p + 1]; out[o + 2] = rgb[p + 2];
    }
  }
  return out;
}

export function resize(rgb, w, h, ow, oh, interpolation) {
  if (ow === w && oh === h) return rgb;
  if (interpolation === 'nearest') return resampleNearest(rgb, w, h, ow, oh);
  return resampleConv(rgb, w, h, ow, oh, FILTERS[interpolation] || FILTERS.bilinear);
}

// Python's round(): halves go to the even neighbour (lugha.preprocess centres crops with it).
function roundHalfEven(x) {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function crop(rgb, w, left, top, cw, ch) {
  const out = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) out.set(rgb.subarray(((y + top) * w + left) * 3, ((y + top) * w + left + cw) * 3), y * cw * 3);
  return out;
}

// RGBA (canvas ImageData) -> RGB, transparent pixels over `fill` with Pillow's paste-with-mask rounding.
export function rgbaToRgb(rgba, fill) {
  const n = rgba.length / 4, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      if (a === 255) { out[i * 3 + c] = rgba[i * 4 + c]; continue; }
      const t = rgba[i * 4 + c] * a + fill[c] * (255 - a) + 128;
      out[i * 3 + c] = ((t >> 8) + t) >> 8;
    }
  }
  return out;
}

// The geometric part of lugha.preprocess.resize_pil: RGB bytes -> size x size RGB bytes.
export function resizeToSpec(rgb, w, h, spec) {
  const s = spec.size;
  if (spec.resize === 'squash') return resize(rgb, w, h, s, s, spec.interpolation);
  if (spec.resize === 'letterbox') {
    const [nw, nh] = w <= h ? [Math.max(1, Math.trunc(s * w / h)), s] : [s, Math.max(1, Math.trunc(s * h / w))];
    const small = resize(rgb, w, h, nw, nh, spec.interpolation);
    const out = new Uint8Array(s * s * 3);
    for (let i = 0; i < s * s; i++) { out[i * 3] = spec.fill[0]; out[i * 3 + 1] = spec.fill[1]; out[i * 3 + 2] = spec.fill[2]; }
    const ox = Math.floor((s - nw) / 2), oy = Math.floor((s - nh) / 2);
    for (let y = 0; y < nh; y++) out.set(small.subarray(y * nw * 3, (y + 1) * nw * 3), ((y + oy) * s + ox) * 3);
    return out;
  }
  const short = spec.crop_pct < 1.0 ? Math.trunc(s / spec.crop_pct) : s;
  const [nw, nh] = w <= h ? [short, Math.trunc(short * h / w)] : [Math.trunc(short * w / h), short];
  const big = resize(rgb, w, h, nw, nh, spec.interpolation);
  return crop(big, nw, roundHalfEven((nw - s) / 2.0), roundHalfEven((nh - s) / 2.0), s, s);
}

// lugha.preprocess.normalize in float32 arithmetic (Math.fround at each numpy step), in the graph's layout.
export function normalize(rgb, spec, layout) {
  const s = spec.size, n = s * s, out = new Float32Array(n * 3);
  const mean = spec.mean.map(Math.fround), std = spec.std.map(Math.fround), f255 = Math.fround(255.0);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const v = spec.dtype === 'uint8' ? rgb[i * 3 + c]
        : Math.fround(Math.fround(Math.fround(rgb[i * 3 + c] / f255) - mean[c]) / std[c]);
      out[layout === 'NHWC' ? i * 3 + c : c * n + i] = v;
    }
  }
  return out;
}

// A File/Blob -> decoded RGB bytes, EXIF orientation applied, no colour management (as Pillow).
export async function decode(blob, fill) {
  const bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
                                                 premultiplyAlpha: 'none' });
  const { width: w, height: h } = bitmap;
  const canvas = typeof OffscreenCanvas !== 'undefined' ? new OffscreenCanvas(w, h)
    : Object.assign(document.createElement('canvas'), { width: w, height: h });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const data = ctx.getImageData(0, 0, w, h).data;
  return { rgb: rgbaToRgb(data, fill), width: w, height: h };
}

// The whole of lugha.preprocess.preprocess_image for one image file.
export async function preprocessBlob(blob, spec, layout) {
  const { rgb, width, height } = await decode(blob, spec.fill);
  return normalize(resizeToSpec(rgb, width, height, spec), spec, layout || spec.layout);
}
