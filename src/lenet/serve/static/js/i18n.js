// Every word on the page, in English and Chinese, and one sentence per layer written for a student.
"use strict";

(function (L) {
  const S = {
    en: {
      title: "lenet: draw a digit",
      loading: "loading the model…",
      clear: "Clear", undo: "Undo", sample: "Sample", upload: "Upload…", play: "▶ Play", pause: "❚❚ Pause",
      language: "中文", large: "Large type",
      drawHint: "Draw a digit with the mouse, a finger or a pen.",
      layersTitle: "Every layer's output",
      layersHint: "Orange: positive, blue: negative, black: zero; each layer on its own scale. Click a map to see how it was computed.",
      stage: "Show each layer", pre: "before its activation", post: "after its activation",
      params: "{n} parameters", acc: "test accuracy {a}%", accUnknown: "test accuracy unknown",
      modelOn: "{model} on {dataset}",
      sampleOff: "Sample is off: {why}",
      sampleNone: "no test images on this server (start lenet serve with --root DATA)",
      sampleStatus: "Test image #{i}, labelled {label}.",
      uploaded: "Uploaded {name}.",
      reading: "reading…",
      errNotImage: "“{name}” is not a picture this page can read. Try a PNG or JPEG photo or scan of one digit.",
      errTooLarge: "“{name}” is too large (over {mb} MB or 12 megapixels). Try a smaller picture.",
      errServer: "The server did not answer ({why}). Is lenet serve still running?",
      errLoad: "The page could not load the model: {why}",
      blank: "Nothing to read: draw a digit.",
      blankUpload: "There is no ink in this picture: nothing to read.",
      thick: "Drawn small, so it was scaled up as MNIST's digits were, and the strokes came out thicker than 99% of the training digits (ink covers {c}% of the input). Draw it bigger.",
      faint: "The strokes are thinner or fainter than almost any training digit (ink covers {c}% of the input). Draw bolder.",
      unsure: "Unsure: the top probability is only {p}%. This looks unlike the digits the model learnt from.",
      unsureLearning: "Unsure: the top probability is only {p}%. This is the network part-way through its training.",
      saliencyTitle: "What pushed the answer",
      saliencyHint: "Red: ink that pushed towards {label}; blue: ink that pushed away. Click a bar to ask about another class.",
      snapshots: "Watch it learn",
      snapshotStep: "step {step} (epoch {epoch})", snapshotEpoch: "after epoch {epoch}", snapshotFinal: "the trained model",
      snapshotAcc: "test accuracy {a}%",
      share: "Students open", shareScan: "or scan",
      close: "Close",
      detailOf: "{layer} · map {c} of {n}", detailUnit: "{layer} · unit {i} of {n}",
      pointAt: "Point at (or tap) a unit of the map to see its arithmetic.",
      kernels: "The kernels that made this map", kernelFor: "× {layer} map {c}",
      weightsOf: "The unit's weights, laid out as its input", prototype: "The class's fixed picture (±1)",
      field: "Where the unit looks", onInput: "on the input", onBelow: "on {layer}",
      arithmetic: "The arithmetic",
      sumOfMap: "{layer} map {c}: Σ {n} inputs × weights",
      products: "{layer} map {c} × its kernel, term by term (input × weight; click a kernel for another map):",
      plusBias: "+ bias", preValue: "pre-activation", biggest: "the {n} biggest of {total} terms", rest: "the other {n}",
      windowMax: "the largest of {n}", windowMean: "the mean of {n}", coefficient: "× coefficient",
      distance: "distance Σ (x − w)²", score: "score = −distance",
      nearest: "",
    },
    zh: {
      title: "lenet：写一个数字",
      loading: "正在加载模型…",
      clear: "清除", undo: "撤销", sample: "样例", upload: "上传…", play: "▶ 播放", pause: "❚❚ 暂停",
      language: "English", large: "大字模式",
      drawHint: "用鼠标、手指或触控笔写一个数字。",
      layersTitle: "每一层的输出",
      layersHint: "橙色为正，蓝色为负，黑色为零；每层各自缩放。点击任一特征图，看它是怎样算出来的。",
      stage: "每层显示", pre: "激活之前", post: "激活之后",
      params: "{n} 个参数", acc: "测试准确率 {a}%", accUnknown: "测试准确率未知",
      modelOn: "{model}，训练于 {dataset}",
      sampleOff: "“样例”不可用：{why}",
      sampleNone: "服务器上没有测试图像（启动 lenet serve 时加 --root 数据目录）",
      sampleStatus: "测试图像 #{i}，标签为 {label}。",
      uploaded: "已上传 {name}。",
      reading: "识别中…",
      errNotImage: "“{name}”不是本页能读取的图片。请换一张只有一个数字的 PNG 或 JPEG 照片或扫描件。",
      errTooLarge: "“{name}”太大（超过 {mb} MB 或 1200 万像素）。请换一张小一些的图片。",
      errServer: "服务器没有响应（{why}）。lenet serve 还在运行吗？",
      errLoad: "页面无法加载模型：{why}",
      blank: "没有可识别的内容：请写一个数字。",
      blankUpload: "这张图片里没有笔迹：没有可识别的内容。",
      thick: "写得太小：它像 MNIST 的数字一样被放大了，笔画因此比 99% 的训练数字都粗（笔迹占输入的 {c}%）。请写大一些。",
      faint: "笔画比几乎所有训练数字都细或淡（笔迹占输入的 {c}%）。请写粗一些。",
      unsure: "不确定：最高概率只有 {p}%。它不太像模型学过的数字。",
      unsureLearning: "不确定：最高概率只有 {p}%。这是训练到一半的网络。",
      saliencyTitle: "是什么推动了这个答案",
      saliencyHint: "红色：把答案推向 {label} 的笔迹；蓝色：把答案推离它的笔迹。点击某个类别的条形，看另一个类别。",
      snapshots: "看它学习",
      snapshotStep: "第 {step} 步（第 {epoch} 轮）", snapshotEpoch: "第 {epoch} 轮之后", snapshotFinal: "训练好的模型",
      snapshotAcc: "测试准确率 {a}%",
      share: "学生打开", shareScan: "或扫码",
      close: "关闭",
      detailOf: "{layer} · 第 {c} 个特征图（共 {n} 个）", detailUnit: "{layer} · 第 {i} 个单元（共 {n} 个）",
      pointAt: "把指针移到（或点按）特征图上的一个单元，看它的计算过程。",
      kernels: "生成这个特征图的卷积核", kernelFor: "× {layer} 第 {c} 个图",
      weightsOf: "这个单元的权重，按其输入排列", prototype: "该类别固定的图案（±1）",
      field: "这个单元看的区域", onInput: "在输入上", onBelow: "在 {layer} 上",
      arithmetic: "计算过程",
      sumOfMap: "{layer} 第 {c} 个图：Σ {n} 个输入 × 权重",
      products: "{layer} 第 {c} 个图 × 其卷积核，逐项（输入 × 权重；点击另一个卷积核可切换）：",
      plusBias: "+ 偏置", preValue: "激活前的值", biggest: "{total} 项中最大的 {n} 项", rest: "其余 {n} 项",
      windowMax: "{n} 个数中的最大值", windowMean: "{n} 个数的平均值", coefficient: "× 系数",
      distance: "距离 Σ (x − w)²", score: "得分 = −距离",
      nearest: "",
    },
  };

  L.lang = "en";
  L.t = function (key, vars = {}) {
    const text = (S[L.lang] && S[L.lang][key]) ?? S.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? vars[name] : `{${name}}`));
  };

  const ACT = {
    en: {
      relu: "then ReLU keeps positives and turns negatives into 0",
      sigmoid: "then the sigmoid 1/(1+e⁻ˣ) squeezes every value into 0…1",
      tanh: "then tanh squeezes every value into −1…1",
      squash: "then LeCun's squashing function 1.7159·tanh(2x/3) squeezes it into −1.7…1.7",
      clippedlog: "then the log of the clipped outputs, which is what Keras' loss reads",
      batchnorm: "batch normalisation rescales each map with statistics measured in training",
    },
    zh: {
      relu: "再经 ReLU：正数保留，负数变成 0",
      sigmoid: "再经 sigmoid 1/(1+e⁻ˣ) 把每个值压到 0…1 之间",
      tanh: "再经 tanh 把每个值压到 −1…1 之间",
      squash: "再经 LeCun 的压缩函数 1.7159·tanh(2x/3) 压到 −1.7…1.7 之间",
      clippedlog: "再对裁剪后的输出取对数，这正是 Keras 的损失函数读取的",
      batchnorm: "批归一化用训练时统计的均值和方差重新缩放每个特征图",
    },
  };

  // One sentence (or two) per displayed block: what it does, and why its shape is what it is.
  L.explainBlock = function (net, block, shapes, index) {
    const zh = L.lang === "zh";
    const spec = net.layers[block.main];
    const inShape = shapes[block.main];
    const outShape = shapes[block.main + 1];
    const side = (s) => (s.length === 3 ? `${s[1]}×${s[2]}` : `${s[0]}`);
    const first = block.main === 0;
    const extras = block.stages.slice(1).map((i) => net.layers[i].type).filter((t) => ACT.en[t]);
    const tail = extras.length ? (zh ? "；" : "; ") + extras.map((t) => ACT[zh ? "zh" : "en"][t]).join(zh ? "；" : "; ") : "";
    const last = index === net.blocks.length - 1;
    let text;
    switch (spec.type) {
      case "conv":
      case "sparseconv": {
        const { kernel: k, padding: p = 0, stride: s = 1 } = spec;
        const n = inShape[1];
        const formula = `(${n}${p ? ` + 2×${p}` : ""} − ${k})${s > 1 ? ` / ${s}` : ""} + 1 = ${outShape[1]}`;
        const what = first ? (zh ? "输入图像" : "the input image") : zh ? `下面 ${inShape[0]} 个特征图` : `the ${inShape[0]} maps below`;
        text = zh
          ? `卷积：${outShape[0]} 个特征图各有自己的 ${k}×${k} 卷积核，在${what}上滑动，每个位置把窗口里的数乘以权重、相加、再加上偏置${tail}。边长 ${formula}${p ? `（四周补 ${p} 圈 0）` : "（核必须完整落在输入内）"}。`
          : `Convolution: each of the ${outShape[0]} maps slides its own ${k}×${k} kernel over ${what}; at every position it multiplies the window by the weights, adds them up and adds a bias${tail}. Side ${formula}${p ? ` (${p} ring${p > 1 ? "s" : ""} of zeros padded around)` : " (the kernel must fit inside)"}.`;
        if (spec.type === "sparseconv") {
          text += zh
            ? " 1998 年的 C3 并不连接全部 6 个 S2 图：按 LeCun 的连接表，每个图只看其中 3、4 或 6 个，既省连接，又让各图学到不同的特征。"
            : " In 1998's C3 a map does not see all six S2 maps: LeCun's table gives each 3, 4 or all 6 of them, which saves connections and makes the maps learn different things.";
        }
        break;
      }
      case "maxpool":
      case "avgpool": {
        const k = spec.kernel;
        const what = spec.type === "maxpool" ? (zh ? "最大值" : "largest") : zh ? "平均值" : "mean";
        text = zh
          ? `${spec.type === "maxpool" ? "最大" : "平均"}池化：每个输出取一个 ${k}×${k} 块的${what}，所以特征图边长减半：${inShape[1]} → ${outShape[1]}。数字稍微平移，结果几乎不变${tail}。`
          : `${spec.type === "maxpool" ? "Max" : "Average"} pooling: each output is the ${what} of a ${k}×${k} block, so the maps halve: ${inShape[1]} → ${outShape[1]}. A digit moved by a pixel looks almost the same here${tail}.`;
        break;
      }
      case "subsample":
        text = zh
          ? `下采样（1998）：每个 2×2 块的和乘以一个可训练系数、加偏置${tail}；边长减半：${inShape[1]} → ${outShape[1]}。`
          : `Subsampling (1998): the sum of each 2×2 block times a trainable coefficient, plus a bias${tail}; the maps halve: ${inShape[1]} → ${outShape[1]}.`;
        break;
      case "linear": {
        const before = shapes[block.main - 1];
        const from = inShape.length === 1 && before && before.length === 3 && before[1] * before[2] > 1 ? before : null;
        const flat = from ? (zh ? `（${from[0]} 个 ${from[1]}×${from[2]} 的图展平成 ${inShape[0]} 个数）` : ` (${from[0]} maps of ${from[1]}×${from[2]} laid out in one row)`) : "";
        text = zh
          ? `全连接：${outShape[0]} 个单元，每个都用自己的权重对下面全部 ${inShape[0]} 个数${flat}加权求和，再加偏置${tail}。`
          : `Fully connected: each of the ${outShape[0]} units weighs all ${inShape[0]} numbers below${flat} with its own weights and adds a bias${tail}.`;
        if (last || (index === net.blocks.length - 2 && net.layers[net.blocks[index + 1].main].type === "rbf")) {
          text += last
            ? zh ? " 每个类别一个得分；softmax 把这些得分变成上面的概率。" : " One score per class; softmax turns the scores into the probabilities above."
            : zh ? " 84 个数排成 7×12，正好对应 RBF 层里数字图案的像素。" : " Its 84 numbers, laid out 7×12, are compared with the RBF layer's pictures of the digits.";
        }
        break;
      }
      case "rbf":
        text = zh
          ? "RBF 输出层（1998）：每个类别的得分是 F6 的 84 个数与该数字一幅固定的 7×12 图案（±1）之间的平方距离；距离最小的类别胜出。"
          : "RBF output (1998): each class's score is the squared distance between F6's 84 numbers and a fixed 7×12 picture of that digit (±1 pixels); the nearest picture wins.";
        break;
      default:
        text = tail.replace(/^[;；] /, "");
    }
    return text;
  };

  L.explainInput = function (net) {
    const zh = L.lang === "zh";
    const size = net.manifest.input.size;
    const whole = net.manifest.input.style === "whole";
    const pad = size !== 28 ? (zh ? `，再四周补背景到 ${size}×${size}` : `, then padded with background to ${size}×${size}`) : "";
    if (whole) return zh ? `输入：整幅图缩放进 28×28${pad}。` : `The input: the whole picture fitted into 28×28${pad}.`;
    return zh
      ? `输入：网络真正读到的图像。笔迹被裁出、缩放进 20×20、按重心放在 28×28 的中央，和 MNIST 的数字一样${pad}。`
      : `The input the network actually reads: your ink cropped, scaled into 20×20 and centred by its mass in 28×28, as MNIST's digits were${pad}.`;
  };
})(window.Lenet);
